"""The default SAM: vit_t on a CPU, vit_b on a GPU, $SAMCLIP_SAM_MODEL over both; evaluations vit_b."""
import pytest

from core import config, models
from core.cli.args import engine_settings_from_args
from core.cli.main import build_parser
from core.engine import EngineSettings
from core.evaluate import PAPER_SAM


@pytest.fixture
def no_env_model(monkeypatch):
    monkeypatch.setattr(config, "SAM_MODEL", None)


def test_default_follows_the_device(no_env_model):
    assert models.default_sam_model("cpu") == "vit_t"
    assert models.default_sam_model("cuda") == "vit_b" and models.default_sam_model("cuda:1") == "vit_b"
    assert EngineSettings(device="cpu").sam == "vit_t" and EngineSettings(device="cuda").sam == "vit_b"
    assert EngineSettings(sam="vit_l", device="cpu").sam == "vit_l"


def test_environment_wins(monkeypatch):
    monkeypatch.setattr(config, "SAM_MODEL", "vit_h")
    assert models.default_sam_model("cpu") == models.default_sam_model("cuda") == "vit_h"
    assert EngineSettings(device="cpu").sam == "vit_h"


@pytest.mark.parametrize("argv", [["segment", "x.jpg", "--out", "o"], ["index", "--images", "imgs", "--out", "g"],
                                  ["refer", "x.jpg", "a dog"]])
def test_commands_default_by_device(no_env_model, argv):
    parser = build_parser()
    assert engine_settings_from_args(parser.parse_args([*argv, "--device", "cpu"])).sam == "vit_t"
    assert engine_settings_from_args(parser.parse_args([*argv, "--device", "cuda"])).sam == "vit_b"
    assert engine_settings_from_args(parser.parse_args([*argv, "--device", "cpu", "--sam", "vit_l"])).sam == "vit_l"


@pytest.mark.parametrize("argv", [["evaluate", "retrieval", "--coco", "c.json"],
                                  ["evaluate", "refer", "--synthetic-coco", "c.json"]])
def test_evaluations_keep_vit_b(monkeypatch, argv):
    monkeypatch.setattr(config, "SAM_MODEL", "vit_t")   # even when the app's default is set
    args = build_parser().parse_args([*argv, "--device", "cpu"])
    assert PAPER_SAM == "vit_b" and engine_settings_from_args(args).sam == "vit_b"
