"""core.dataset.folder / propose: a folder labelled into a dataset, one SAM and one CLIP pass per
image whatever the mix, resumable (interrupted + rerun == one run), bad images skipped and
listed; the CLI (killed with SIGKILL and rerun) and the Ray runner give the same files."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.dataset.folder import label_folder, list_images, local_runner
from core.dataset.propose import LabelJob, example_features, propose
from core.engine import Engine, EngineSettings
from core.sam.automask import AutoMaskSettings

REPO = Path(__file__).resolve().parents[2]
AUTOMASK = AutoMaskSettings(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
MODELS = ["--untrained", "--sam", "vit_tiny", "--device", "cpu", "--points-per-side", "4",
          "--pred-iou-thresh", "0", "--stability-thresh", "0"]


@pytest.fixture(scope="module")
def engine():
    return Engine(EngineSettings(sam="vit_tiny", untrained=True, device="cpu"))


def _picture(seed: int, size=(48, 64)) -> np.ndarray:
    """A small picture with a few flat shapes (so SAM's untrained grid still finds masks)."""
    rng = np.random.default_rng(seed)
    image = np.full((*size, 3), rng.integers(0, 255, 3), np.uint8)
    for _ in range(3):
        y, x = rng.integers(0, size[0] - 12), rng.integers(0, size[1] - 12)
        image[y:y + 12, x:x + 16] = rng.integers(0, 255, 3)
    return image


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "photos"
    (root / "nested").mkdir(parents=True)
    for i, name in enumerate(["a.png", "b.png", "nested/c.png"]):     # PNG: the analyses stay cached across tests
        Image.fromarray(_picture(i)).save(root / name)
    (root / "broken.jpg").write_bytes(b"not an image at all")
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not listed")
    return root


def _job(**kw) -> LabelJob:
    return LabelJob(vocabulary="cat, cup, person", phrase="dogs", automask=AUTOMASK, **kw)


def test_list_images_is_sorted_recursive_and_skips_the_output(folder):
    (folder / "out").mkdir()
    Image.fromarray(_picture(9)).save(folder / "out" / "x.png")
    assert list_images(folder, skip=folder / "out") == ["a.png", "b.png", "broken.jpg", "empty.png",
                                                        "nested/c.png"]


def test_one_sam_and_one_clip_pass_per_image_whatever_the_mix(engine, monkeypatch):
    import core.analysis as analysis

    image = _picture(0)                                  # a.png of the folder tests: analysed here first
    calls = {"sam": 0, "clip": 0}
    segmenter = engine.segmenter
    everything, image_candidates = segmenter.everything, analysis.image_candidates

    def count_sam(*a, **k):
        calls["sam"] += 1
        return everything(*a, **k)

    def count_clip(*a, **k):
        calls["clip"] += 1
        return image_candidates(*a, **k)

    examples = example_features(engine.embedder, [(_picture(7), _picture(7)[..., 0] > 0, "box")],
                                _job().grounding)
    monkeypatch.setattr(segmenter, "everything", count_sam)
    monkeypatch.setattr(analysis, "image_candidates", count_clip)
    found = propose(engine, image, _job(examples=examples))
    assert calls == {"sam": 1, "clip": 1}
    assert found and all(o.origin == "proposal" and not o.reviewed and o.score is not None for o in found)
    assert {o.category for o in found} <= {"dog", "box", "cat", "cup", "person"}
    vocab_only = propose(engine, image, LabelJob(vocabulary="cat, cup", automask=AUTOMASK))   # analysis cached
    assert calls == {"sam": 1, "clip": 1} and vocab_only
    assert all(0 <= o.margin <= o.score <= 1 for o in vocab_only)   # the top-2 margin, for the review queue


def test_interrupted_and_rerun_equals_one_run(engine, folder, tmp_path):
    job = _job()
    whole = label_folder(folder, tmp_path / "whole", job, local_runner(engine, folder, job), formats="coco,yolo")
    assert whole.images == 5 and whole.computed == 3
    assert [f for f, _ in whole.failures] == ["broken.jpg", "empty.png"]

    def killed_after_two(files):
        for n, record in enumerate(local_runner(engine, folder, job)(files)):
            if n == 2:
                raise KeyboardInterrupt
            yield record

    with pytest.raises(KeyboardInterrupt):
        label_folder(folder, tmp_path / "resumed", job, killed_after_two, formats="coco,yolo")
    again = label_folder(folder, tmp_path / "resumed", job, local_runner(engine, folder, job), formats="coco,yolo")
    assert again.resumed == 2 and again.computed == 1           # a.png, b.png were kept; c.png computed
    a, b = (json.loads((tmp_path / d / "instances.json").read_text()) for d in ("whole", "resumed"))
    assert a == b
    assert len(a["images"]) == 3 and a["annotations"]
    for name in ("a.txt", "nested/c.txt"):
        assert ((tmp_path / "whole/yolo/labels/train" / name).read_text()
                == (tmp_path / "resumed/yolo/labels/train" / name).read_text())


def test_other_settings_in_the_same_out_are_refused(engine, folder, tmp_path):
    job = _job()
    label_folder(folder, tmp_path / "out", job, local_runner(engine, folder, job))
    other = LabelJob(vocabulary="tree", automask=AUTOMASK)
    with pytest.raises(ValueError, match="other settings"):
        label_folder(folder, tmp_path / "out", other, local_runner(engine, folder, other))


def test_a_job_needs_something_to_do():
    with pytest.raises(ValueError, match="say what to label"):
        LabelJob()


def _cli(*args, timeout=300):
    env = {**os.environ, "SAMCLIP_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.mark.slow
def test_cli_killed_and_rerun_equals_one_run(folder, tmp_path):
    args = ["label", str(folder), "--find", "dogs", "--vocab", "cat, cup", "--format", "coco,labelme", *MODELS]
    whole = _cli(*args, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-2000:]
    summary = json.loads(whole.stdout)
    assert (summary["images"], summary["failed"], summary["untrained"]) == (5, 2, True)
    assert "skipped broken.jpg" in whole.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "core", *args, "--out", str(out)], cwd=REPO,
                            env={**os.environ, "SAMCLIP_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and len(list((out / ".work/results").glob("*.json"))) < 1:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "instances.json").exists()
    rerun = _cli(*args, "--out", str(out))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert json.loads(rerun.stdout)["resumed"] >= 1
    assert (json.loads((tmp_path / "whole/instances.json").read_text())
            == json.loads((out / "instances.json").read_text()))
    assert sorted(p.name for p in (out / "labelme").glob("*.json")) == ["a.json", "b.json", "nested__c.json"]


@pytest.mark.slow
def test_ray_runner_gives_the_local_files(engine, folder, tmp_path):
    from core.gallery.ray_runner import ray_available

    if reason := ray_available():
        pytest.skip(reason)
    from core.dataset.ray_label import ray_label_runner

    job = _job()
    label_folder(folder, tmp_path / "local", job, local_runner(engine, folder, job))
    run = label_folder(folder, tmp_path / "ray", job,
                       ray_label_runner(engine.settings, folder, job, workers=2, num_cpus=2))
    assert (run.computed, len(run.failures)) == (3, 2)
    assert (json.loads((tmp_path / "local/instances.json").read_text())
            == json.loads((tmp_path / "ray/instances.json").read_text()))
