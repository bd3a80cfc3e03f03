"""core.evaluate.suggest and `python -m core evaluate suggest`: the replay of labelling on COCO."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.evaluate.suggest import SuggestEvalSettings, bin_of, evaluate_suggestions, format_table
from core.io.masks import mask_to_rle

REPO = Path(__file__).resolve().parents[2]


def _by(report, row, source):
    return {r["examples_seen"]: r for r in report["rows"] if r["row"] == row and r["source"] == source}


def _check_oracle(report):
    merged, text, knn = (_by(report, "oracle", s) for s in ("merged", "text", "knn"))
    assert merged["all"]["top1"] == 1.0 and text["all"]["top1"] == 1.0 and merged["all"]["top3"] == 1.0
    assert all(r["top1"] == 1.0 for b, r in knn.items() if b not in ("0", "all"))
    assert merged["all"]["objects"] == sum(r["objects"] for b, r in merged.items() if b != "all")


def test_bins():
    assert [bin_of(n) for n in (0, 1, 2, 3, 4, 5, 9, 10, 19, 20, 500)] == \
        ["0", "1", "2", "3-4", "3-4", "5-9", "5-9", "10-19", "10-19", "20+", "20+"]


@pytest.fixture()
def tiny_coco(tmp_path):
    """Three 32x32 images with squares of three classes (no image files: the oracle row needs none)."""
    anns, k = [], 0
    for image_id in (1, 2, 3):
        for c in (1, 2, 3, 1):
            m = np.zeros((32, 32), bool)
            m[2 * c: 2 * c + 10, 3 * k % 20: 3 * k % 20 + 10] = True
            k += 1
            anns.append({"id": k, "image_id": image_id, "category_id": c, "iscrowd": 0, "area": 100,
                         "bbox": [0, 0, 10, 10], "segmentation": mask_to_rle(m)})
    doc = {"images": [{"id": i, "file_name": f"{i}.jpg", "height": 32, "width": 32} for i in (1, 2, 3)],
           "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "car"}],
           "annotations": anns}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(doc))
    return path


def test_oracle_gives_one_on_a_tiny_set(tiny_coco):
    report = evaluate_suggestions(tiny_coco, None, None, SuggestEvalSettings(rows=("oracle",)))
    _check_oracle(report)
    assert report["classes"] == 3 and _by(report, "oracle", "merged")["all"]["objects"] == 12
    assert _by(report, "oracle", "knn")["0"]["objects"] == 3       # each class's first object
    assert "| oracle | merged | all | 12 | 1.000 | 1.000 |" in format_table(report)
    with pytest.raises(ValueError, match="needs CLIP"):
        evaluate_suggestions(tiny_coco, None, None, SuggestEvalSettings(rows=("clip",)))
    with pytest.raises(ValueError, match="unknown row"):
        evaluate_suggestions(tiny_coco, None, None, SuggestEvalSettings(rows=("gold",)))


def test_oracle_on_coco128(coco_dir):
    report = evaluate_suggestions(coco_dir / "instances.json", None, None,
                                  SuggestEvalSettings(rows=("oracle",), limit=40))
    _check_oracle(report)
    assert report["classes"] == 80 and report["chance_top1"] == 0.0125


@pytest.mark.slow
def test_command_with_untrained_clip_on_coco128(coco_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "core", "evaluate", "suggest", "--coco",
                           str(coco_dir / "instances.json"), "--limit", "2", "--untrained", "--device", "cpu",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "SAMCLIP_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    _check_oracle(report)
    clip = _by(report, "clip", "merged")["all"]
    assert clip["objects"] == _by(report, "oracle", "merged")["all"]["objects"] > 0
    assert 0.0 <= clip["top1"] <= clip["top3"] <= 1.0
    assert "untrained" in report["models"] and (tmp_path / "suggest_eval.md").is_file()
