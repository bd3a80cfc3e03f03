"""app.py: its flags mean what the CLI's mean (one function turns them into EngineSettings)."""
import app
from core.cli.args import engine_settings_from_args
from core.cli.main import build_parser


def test_app_model_flags_reach_the_engine_settings():
    """`python app.py --sam-precision fp32` used to be ignored (the settings said 'auto')."""
    args = app.parse_args(["--untrained", "--sam", "vit_tiny", "--sam-precision", "fp32", "--no-fast",
                           "--clip", "RN50", "--device", "cpu"])
    settings = engine_settings_from_args(args)
    assert settings.sam_precision == "fp32" and settings.sam == "vit_tiny" and settings.fast is False
    assert settings.clip == "RN50" and settings.device == "cpu" and settings.untrained is True


def test_app_and_cli_build_the_same_settings_from_the_same_flags():
    flags = ["--untrained", "--sam", "vit_l", "--sam-precision", "bf16", "--pretrained", "laion2b"]
    cli_args = build_parser().parse_args(["search", "gallery-dir", "--text", "a dog", *flags])
    assert engine_settings_from_args(app.parse_args(flags)) == engine_settings_from_args(cli_args)

