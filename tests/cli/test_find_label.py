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
MODELS = ["--untrained", "--sam", "vit_tiny", "--device", "cpu", "--points-per-side", "4",
          "--pred-iou-thresh", "0", "--stability-thresh", "0"]
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
    (["find", IMAGE, "--like-box", "1,2,3"], "x1,y1,x2,y2"),
    (["label", IMAGE, "--vocab", "/no/such/words.txt", "--out", "/tmp/x"], "cannot read"),
    (["label", IMAGE, "--vocab", ",", "--out", "/tmp/x"], "empty"),
])
def test_bad_input_is_one_line_and_exit_2(args, reason):
    proc = run(*args, *MODELS, check=False)
    assert proc.returncode == 2 and reason in proc.stderr.splitlines()[-1], proc.stderr[-500:]
