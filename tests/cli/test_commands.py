"""`python -m core`: JSON on stdout, one-line errors with non-zero exit (small untrained models)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODELS = ["--untrained", "--sam", "vit_tiny", "--device", "cpu"]


def run(*args, check=True):
    env = {**os.environ, "SAMCLIP_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def test_help_lists_subcommands():
    out = run("--help").stdout
    for name in ("segment", "index", "search", "fetch-weights"):
        assert name in out


@pytest.fixture(scope="module")
def coco_file(coco_dir):
    return sorted((coco_dir / "images").glob("*.jpg"))[0]


@pytest.mark.slow
def test_segment_writes_masks_and_json(tmp_path, coco_file):
    proc = run("segment", str(coco_file), "--point", "100,120", "--point", "300,200:0", "--out", str(tmp_path),
               "--sam-precision", "fp32", *MODELS)
    result = json.loads(proc.stdout)
    assert result["untrained"] is True and "UNTRAINED" in proc.stderr
    # which model is loaded and how fast its encoder is on this machine
    assert result["encoder_s"] > 0 and "image encoder" in proc.stderr and " cores (AMX " in proc.stderr
    assert len(result["masks"]) == 1 and (tmp_path / "mask_0.png").is_file()
    assert json.loads((tmp_path / "result.json").read_text()) == result
    proc = run("segment", str(coco_file), "--box", "10,20,200,220", "--multimask", "--out", str(tmp_path), *MODELS)
    assert len(json.loads(proc.stdout)["masks"]) == 3


@pytest.mark.parametrize("args, reason", [
    (["--point", "5000,10"], "outside the image"),
    (["--box", "10,10,10,90"], "empty or outside"),
    ([], "at least one point or a box"),
])
@pytest.mark.slow
def test_segment_bad_prompts_fail_in_one_line(tmp_path, coco_file, args, reason):
    proc = run("segment", str(coco_file), *args, "--out", str(tmp_path), *MODELS, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and reason in errors[0]


def test_bad_arguments_and_files(tmp_path):
    proc = run("segment", str(tmp_path / "nope.jpg"), "--box", "1,2,3,4", "--out", str(tmp_path), *MODELS, check=False)
    assert proc.returncode == 2 and "no such image file" in proc.stderr
    proc = run("segment", "x.jpg", "--box", "1,2,3", "--out", str(tmp_path), check=False)
    assert proc.returncode == 2 and "X0,Y0,X1,Y1" in proc.stderr
    proc = run("search", str(tmp_path), "--text", "a dog", *MODELS, check=False)
    assert proc.returncode == 2 and "not a gallery" in proc.stderr
    proc = run("segment", "x.jpg", "--point", "1,2", "--sam-precision", "int4", "--out", str(tmp_path), check=False)
    assert proc.returncode == 2 and "invalid choice: 'int4'" in proc.stderr


@pytest.mark.slow
def test_index_then_search_by_text_and_by_object(tmp_path, coco_dir, coco_file):
    gallery = tmp_path / "gallery"
    proc = run("index", "--coco", str(coco_dir / "instances.json"), "--images", str(coco_dir / "images"),
               "--limit", "3", "--oracle-masks", "--view", "crop", "--metric", "l2", "--out", str(gallery), *MODELS)
    summary = json.loads(proc.stdout)
    assert summary["objects"] > 3 and summary["metric"] == "l2"
    hits = [json.loads(line) for line in run("search", str(gallery), "--text", "a dog", "-k", "4", *MODELS).stdout.splitlines()]
    assert len(hits) == 4 and [h["rank"] for h in hits] == [0, 1, 2, 3]
    assert all(h["category"] and h["metric"] == "l2" and h["untrained"] for h in hits)
    assert hits[0]["score"] <= hits[-1]["score"]  # L2 distance: smaller is nearer
    hits = run("search", str(gallery), "--image", str(coco_file), "--box", "10,10,300,300", "-k", "2", *MODELS).stdout
    assert len(hits.splitlines()) == 2
    proc = run("search", str(gallery), "--text", "a dog", "--untrained", "--clip", "RN50", "--sam", "vit_tiny",
               check=False)
    assert proc.returncode == 2 and "another model" in proc.stderr
