"""`python -m core find / label / evaluate label`: JSON out, COCO files pycocotools loads,
the oracle rows at 1.0, one-line errors with exit 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
#: No threshold flags: --untrained alone adapts SAM's automatic-mask thresholds, as the app does.
MODELS = ["--untrained", "--sam", "vit_tiny", "--device", "cpu", "--points-per-side", "4"]
IMAGE = str(REPO / "examples" / "coffee.jpg")


def run(*args, check=True, timeout=300):
    env = {**os.environ, "SAMCLIP_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def test_find_prints_instances_and_writes_masks(tmp_path):
    from pycocotools import mask as mask_utils

    out = json.loads(run("find", IMAGE, "all the cups on the left", "--out", str(tmp_path), *MODELS).stdout)
    assert out["phrase"] == "all the cups on the left" and out["untrained"] is True
    assert out["count"] == len(out["instances"]) == len(list(tmp_path.glob("instance_*.png")))
    for inst in out["instances"]:
        assert inst["label"] == "cup" and len(inst["box"]) == 4
        assert mask_utils.decode(inst["rle"]).shape == Image.open(IMAGE).size[::-1]
    like = json.loads(run("find", IMAGE, "--like-box", "10,10,200,200", *MODELS).stdout)
    assert like["count"] >= 1 and like["instances"][0]["label"] == "object like the example"


def test_label_writes_coco_panoptic_semantic_and_instances(tmp_path):
    from pycocotools.coco import COCO

    out = json.loads(run("label", IMAGE, "--vocab", "cup, table, wall", "--out", str(tmp_path), *MODELS).stdout)
    assert out["vocabulary"] == 3 and set(out["files"]) == {"panoptic_png", "panoptic_json", "semantic_png",
                                                           "semantic_json", "instances_json"}
    coco = COCO(str(tmp_path / "instances.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["cup", "table", "wall"]
    pan = json.loads((tmp_path / "panoptic.json").read_text())
    rgb = np.asarray(Image.open(tmp_path / "panoptic.png")).astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 ** 2 * rgb[..., 2]
    for seg in pan["annotations"][0]["segments_info"]:
        assert (ids == seg["id"]).sum() == seg["area"]
    assert set(np.unique(ids)) <= {0} | {s["id"] for s in pan["annotations"][0]["segments_info"]}


def test_label_with_untrained_models_needs_no_other_flag():
    """`python -m core label IMAGE --untrained` works as is (it failed with "SAM found no object
    masks" unless the thresholds were set to 0 by hand)."""
    out = json.loads(run("label", IMAGE, "--untrained", "--sam", "vit_tiny", "--device", "cpu").stdout)
    assert out["untrained"] is True and out["candidates"] >= 1 and out["files"] == {}


@pytest.mark.parametrize("argv", [["refer", IMAGE, "the cat"],
                                  ["find", IMAGE, "cats"], ["label", IMAGE], ["index", "--images", "imgs", "--out", "g"],
                                  ["evaluate", "label", "--coco", "x.json"]],
                         ids=lambda a: a[0] if a[0] != "evaluate" else "evaluate-label")
def test_every_command_with_untrained_keeps_every_automatic_mask(argv):
    """Every command that makes automatic masks takes the app's untrained thresholds (0) from
    --untrained alone; explicit flags still win; trained runs keep SAM's defaults."""
    from core.cli.args import automask_settings_from_args as from_args
    from core.cli.commands import index_settings_from_args
    from core.cli.main import build_parser
    from core.sam.automask import AutoMaskSettings

    def automask_settings_from_args(args):
        return index_settings_from_args(args).automask if args.command == "index" else from_args(args)

    parser = build_parser()
    try:
        args = parser.parse_args(argv + ["--untrained"])
    except SystemExit:
        pytest.skip(f"{argv[0]} has no automatic masks / --untrained")
    if not hasattr(args, "points_per_side"):
        pytest.skip(f"{argv[0]} makes no automatic masks")
    settings = automask_settings_from_args(args)
    assert settings.pred_iou_thresh == 0 and settings.stability_score_thresh == 0
    trained = automask_settings_from_args(parser.parse_args(argv))
    assert trained.pred_iou_thresh == AutoMaskSettings().pred_iou_thresh
    if hasattr(args, "pred_iou_thresh"):
        given = automask_settings_from_args(parser.parse_args(argv + ["--untrained", "--pred-iou-thresh", "0.5"]))
        assert given.pred_iou_thresh == 0.5 and given.stability_score_thresh == 0


def test_the_oracle_rows_score_one(coco_dir):
    out = json.loads(run("evaluate", "label", "--coco", str(coco_dir / "instances.json"), "--rows", "oracle",
                         "--limit", "12", "--quiet").stdout)
    row = out["rows"]["oracle"]
    assert out["images"] == 12 and row["ap"] == 1.0 and row["pq"] == 1.0 and row["rq"] == 1.0


@pytest.mark.slow
def test_the_clip_rows_run_end_to_end_with_untrained_models(coco_dir):
    out = json.loads(run("evaluate", "label", "--coco", str(coco_dir / "instances.json"), "--limit", "2",
                         "--quiet", *MODELS, timeout=600).stdout)
    assert set(out["rows"]) == {"oracle", "gt-masks+clip", "sam+clip"} and out["untrained"] is True
    assert set(out["find"]) == {"gt-masks+clip", "sam+clip"}
    for row in out["rows"].values():
        assert 0.0 <= row["ap"] <= 1.0 and (row["pq"] is None or 0.0 <= row["pq"] <= 1.0)


@pytest.mark.parametrize("args, reason", [
    (["find", IMAGE, ""], "type what to find"),
    (["find", IMAGE, "on the left"], "no noun"),
    (["find", IMAGE, "--like-box", "1,2,3"], "x0,y0,x1,y1"),
    (["label", IMAGE, "--vocab", "/no/such/words.txt", "--out", "/tmp/x"], "cannot read"),
    (["label", IMAGE, "--vocab", ",", "--out", "/tmp/x"], "empty"),
])
def test_bad_input_is_one_line_and_exit_2(args, reason):
    proc = run(*args, *MODELS, check=False)
    assert proc.returncode == 2 and reason in proc.stderr.splitlines()[-1], proc.stderr[-500:]
