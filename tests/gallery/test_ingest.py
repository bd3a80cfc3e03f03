"""core.gallery.ingest: appending equals building in one go; a killed build resumes to the same
gallery; known images are skipped; nothing indexed is an error; every object gets a
thumbnail (unless turned off). Ground-truth COCO masks and a deterministic fake embedder
(core/bench/fakes.py) keep these fast."""
from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.gallery.gallery import Gallery, cleanup_gallery
from core.gallery.ingest import IngestSettings, Journal, coco_tasks, folder_tasks, ingest, run_stopping
from core.gallery.thumbs import THUMB_SIDE, THUMBS_DIR, read_thumbnail, thumb_path

from core.bench.fakes import fake_models

REPO = Path(__file__).resolve().parents[2]
SETTINGS = IngestSettings(oracle_masks=True, checkpoint_images=2)


@pytest.fixture(scope="module")
def tasks(coco_dir):
    return coco_tasks(coco_dir / "instances.json", coco_dir / "images", limit=8)


def _same(a: Gallery, b: Gallery) -> None:
    assert list(a.records) == list(b.records)
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    assert [e.key for e in a.images] == [e.key for e in b.images]
    q = a.embeddings[::3]
    assert [[h.id for h in hits] for hits in a.search(q, 5)] == [[h.id for h in hits] for hits in b.search(q, 5)]


def _check_thumbnails(directory: Path, records) -> list[int]:
    """Every record has a decodable thumbnail <= THUMB_SIDE px and there are no others;
    returns their sizes in bytes."""
    paths = [thumb_path(directory, r) for r in records]
    assert all(p is not None for p in paths) and len(set(paths)) == len(paths)
    for p in paths:
        thumb = read_thumbnail(p)
        assert thumb is not None and thumb.dtype == np.uint8 and thumb.shape[2] == 3, p
        assert max(thumb.shape[:2]) <= THUMB_SIDE, (p, thumb.shape)
    assert {p for p in (directory / THUMBS_DIR).glob("*/*/*") if not p.name.startswith(".")} == set(paths)
    return [p.stat().st_size for p in paths]


def test_appending_matches_building_in_one_go(tmp_path, tasks):
    models = fake_models()
    one = ingest(tmp_path / "one", tasks, models, SETTINGS, source="coco")
    assert one.images_new == 8 and one.objects_total > 8 and one.checkpoints == 4
    ingest(tmp_path / "app", tasks[5:], models, SETTINGS, source="coco")   # later images first
    with pytest.raises(ValueError, match="--append"):
        ingest(tmp_path / "app", tasks, models, SETTINGS, source="coco")
    report = ingest(tmp_path / "app", tasks, models, SETTINGS, source="coco", append=True)
    assert report.images_skipped == 3 and report.images_new == 5
    _same(Gallery.load(tmp_path / "one"), Gallery.load(tmp_path / "app"))
    sizes = _check_thumbnails(tmp_path / "one", Gallery.load(tmp_path / "one").records)
    assert 300 < np.mean(sizes) < 12_000, f"{np.mean(sizes):.0f} bytes per thumbnail"
    _check_thumbnails(tmp_path / "app", Gallery.load(tmp_path / "app").records)  # old kept, new added
    again = ingest(tmp_path / "app", tasks, models, SETTINGS, source="coco", append=True)  # nothing new
    assert again.images_skipped == 8 and again.objects_added == 0 and again.objects_total == one.objects_total
    g = Gallery.load(tmp_path / "one")
    assert g.model_info["masks"] == "ground truth" and all(r.image_key for r in g.records)


def test_a_stopped_build_resumes_without_duplicates(tmp_path, tasks):
    models = fake_models()
    ingest(tmp_path / "one", tasks, models, SETTINGS, source="coco")
    assert run_stopping(tmp_path / "res", tasks, models, SETTINGS, source="coco", stop_after=2)
    assert not (tmp_path / "res" / "CURRENT").exists() and len(Journal(tmp_path / "res").segment_paths()) == 2
    report = ingest(tmp_path / "res", tasks, models, SETTINGS, source="coco")
    assert report.resumed_segments == 2 and report.images_skipped == 4 and report.images_new == 4
    assert not (tmp_path / "res" / "ingest").exists()
    _same(Gallery.load(tmp_path / "one"), Gallery.load(tmp_path / "res"))
    _check_thumbnails(tmp_path / "res", Gallery.load(tmp_path / "res").records)


def test_a_stopped_build_has_thumbnails_for_its_checkpoints_and_cleanup_keeps_them(tmp_path, tasks):
    models = fake_models()
    assert run_stopping(tmp_path / "g", tasks, models, SETTINGS, source="coco", stop_after=1)
    pending = [r for _, records, _ in Journal(tmp_path / "g").read() for r in records]
    assert pending and all(thumb_path(tmp_path / "g", r).is_file() for r in pending)
    assert cleanup_gallery(tmp_path / "g") == []        # pending work: its thumbnails are kept
    ingest(tmp_path / "g", tasks[:4], models, SETTINGS, source="coco")
    stray = tmp_path / "g" / THUMBS_DIR / "ff" / ("f" * 32)
    stray.mkdir(parents=True)
    (stray / "1.jpg").write_bytes(b"x")
    assert cleanup_gallery(tmp_path / "g") == [f"{THUMBS_DIR}/ff/{'f' * 32}"]
    _check_thumbnails(tmp_path / "g", Gallery.load(tmp_path / "g").records)


def test_no_thumbnails_writes_none_and_gives_the_same_gallery(tmp_path, tasks):
    models = fake_models()
    off = IngestSettings(oracle_masks=True, checkpoint_images=2, thumbnails=False)
    assert off.fingerprint() == SETTINGS.fingerprint()  # resuming with the other choice is allowed
    ingest(tmp_path / "off", tasks[:3], models, off, source="coco")
    ingest(tmp_path / "on", tasks[:3], models, SETTINGS, source="coco")
    assert not (tmp_path / "off" / THUMBS_DIR).exists()
    _same(Gallery.load(tmp_path / "off"), Gallery.load(tmp_path / "on"))


def test_other_settings_do_not_mix_with_pending_work(tmp_path, tasks):
    models = fake_models()
    assert run_stopping(tmp_path / "g", tasks, models, SETTINGS, source="coco", stop_after=1)
    with pytest.raises(ValueError, match="other settings"):
        ingest(tmp_path / "g", tasks, models, IngestSettings(oracle_masks=True, view="mask"), source="coco")
    report = ingest(tmp_path / "g", tasks[:2], models, IngestSettings(oracle_masks=True, view="mask"),
                    source="coco", discard_pending=True)
    assert report.resumed_segments == 0 and Gallery.load(tmp_path / "g").view == "mask"


def test_copies_are_skipped_and_unreadable_folders_fail(tmp_path, coco_dir):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"not an image")
    (folder / "b.png").write_bytes(b"neither")
    with pytest.raises(ValueError, match="nothing indexed"):
        ingest(tmp_path / "g", folder_tasks(folder), fake_models(), SETTINGS)
    assert not (tmp_path / "g" / "CURRENT").exists()
    with pytest.raises(FileNotFoundError):
        folder_tasks(tmp_path / "empty")


def test_worker_processes_give_the_same_gallery(tmp_path, tasks):
    models = fake_models()
    ingest(tmp_path / "a", tasks[:4], models, SETTINGS, source="coco")
    ingest(tmp_path / "b", tasks[:4], models, IngestSettings(oracle_masks=True, checkpoint_images=2, workers=2),
           source="coco")
    _same(Gallery.load(tmp_path / "a"), Gallery.load(tmp_path / "b"))
    _check_thumbnails(tmp_path / "b", Gallery.load(tmp_path / "b").records)


KILLED_RUN = """
import sys
sys.path.insert(0, {repo!r})
from core.gallery.ingest import IngestSettings, coco_tasks, ingest
from core.bench.fakes import fake_models
tasks = coco_tasks({coco!r} + "/instances.json", {coco!r} + "/images", limit=12)
ingest({out!r}, tasks, fake_models(delay=0.05), IngestSettings(oracle_masks=True, checkpoint_images=1), source="coco",
       append=True)
"""


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume(tmp_path, coco_dir):
    """SIGKILL the CLI-like run at random moments, run again until it finishes: the result
    equals an uninterrupted build (0 duplicated, 0 lost objects)."""
    tasks = coco_tasks(coco_dir / "instances.json", coco_dir / "images", limit=12)
    ingest(tmp_path / "ref", tasks, fake_models(), IngestSettings(oracle_masks=True), source="coco")
    script = KILLED_RUN.format(repo=str(REPO), tests=str(REPO / "tests"), coco=str(coco_dir), out=str(tmp_path / "g"))
    rng = random.Random(1)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = subprocess.run([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    _same(Gallery.load(tmp_path / "ref"), Gallery.load(tmp_path / "g"))
    _check_thumbnails(tmp_path / "g", Gallery.load(tmp_path / "g").records)
