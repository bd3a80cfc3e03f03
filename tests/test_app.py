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



def test_gallery_flag_and_environment_reach_the_context(tmp_path, monkeypatch):
    """`python app.py --gallery PATH` (or $SAMCLIP_GALLERY) opens that gallery, once, in the context."""
    import numpy as np
    import pytest

    from core.gallery.browse import GALLERY_ENV
    from core.embed import l2_normalise
    from core.gallery.gallery import Gallery, ObjectRecord

    g = Gallery(8, "mask", "l2")
    g.add(l2_normalise(np.random.default_rng(0).normal(size=(5, 8))),
          [ObjectRecord("x.jpg", (0, 0, 2, 2), "mask") for _ in range(5)])
    g.save(tmp_path / "objects")
    ctx = app.make_context(app.parse_args(["--untrained", "--gallery", str(tmp_path / "objects")]))
    assert ctx.large.path == tmp_path / "objects" and len(ctx.large) == 5
    assert (ctx.large.view, ctx.large.metric) == ("mask", "l2")
    assert ctx.large.label() == "Your gallery: objects (5 objects)"
    monkeypatch.setenv(GALLERY_ENV, str(tmp_path / "objects"))
    assert len(app.make_context(app.parse_args(["--untrained"])).large) == 5
    monkeypatch.delenv(GALLERY_ENV)
    assert app.make_context(app.parse_args(["--untrained"])).large is None
    with pytest.raises(SystemExit):
        app.parse_args(["--gallery", str(tmp_path / "nowhere")])
    (tmp_path / "empty").mkdir()
    assert app.main(["--untrained", "--gallery", str(tmp_path / "empty")]) == 2   # not a gallery: stops at start
