"""The Dataset panel's callbacks without a browser: upload (images + a zip with bad entries),
bounds, apply to all in the background (proposals never overwrite a person's object),
cancel, the review queue, accept/reject, export, and reclaiming at session end."""
from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.engine import EngineSettings
from core.io.labels import ExportMeta, LabelledObject
from demo.callbacks import Callbacks
from demo.context import AppContext, AppSettings
from demo.dataset_set import ImageSet
from demo.state import Session, UserError

REPO = Path(__file__).resolve().parents[1]
TINY = EngineSettings(sam="vit_tiny", untrained=True, device="cpu", clip="ViT-B-32")


@pytest.fixture(scope="module")
def cb(tmp_path_factory) -> Callbacks:
    examples = tmp_path_factory.mktemp("examples")
    pil = Image.open(REPO / "examples" / "coffee.jpg")
    pil.thumbnail((120, 120))
    pil.save(examples / "coffee.jpg")
    settings = AppSettings(examples_dir=examples, gallery_views=("mask",), gallery_max_objects=2,
                           cache_dir=tmp_path_factory.mktemp("cache"), display_max_side=120, work_max_side=200)
    ctx = AppContext(TINY, settings)
    assert ctx.load_models(), ctx.load_error
    callbacks = Callbacks(ctx)
    callbacks.files.upload_dirs = [str(tmp_path_factory.mktemp("uploads"))]
    return callbacks


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = np.full((40, 56, 3), rng.integers(0, 255, 3), np.uint8)
    image[8:24, 10:30] = rng.integers(0, 255, 3)
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def _uploads(cb: Callbacks) -> list[str]:
    folder = Path(cb.files.upload_dirs[0]) / f"u{time.monotonic_ns()}"   # one folder per upload, as Gradio does
    folder.mkdir(parents=True)
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as z:
        z.writestr("set/a.png", _png(1))
        z.writestr("set/nested/b.png", _png(2))
        z.writestr("../evil.png", _png(3))
        z.writestr("readme.txt", "hello")
    (folder / "set.zip").write_bytes(data.getvalue())
    (folder / "c.png").write_bytes(_png(4))
    return [str(folder / "set.zip"), str(folder / "c.png")]


def _wait(cb: Callbacks, session: Session, timeout: float = 300) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        line, running = cb.dataset.progress(session)
        if not running:
            return line
        time.sleep(0.2)
    raise AssertionError("apply to all did not finish")


def test_a_set_from_upload_to_export(cb, tmp_path):
    session = Session()
    strip, summary, notes = cb.dataset.upload(session, _uploads(cb))
    assert [c.split(" · ")[0] for _, c in strip] == ["set/a.png", "set/nested/b.png", "c.png"]
    assert "../evil.png: unsafe path" in notes and "readme.txt: not an image" in notes
    assert summary.startswith("3 image(s): 3 not started")
    assert not list(Path(cb.files.upload_dirs[0]).rglob("*.*")), "uploads are consumed"
    images: ImageSet = session.dataset
    assert images.root.is_relative_to(Path(session.files_dir))

    mine = np.zeros((40, 56), bool)
    mine[8:24, 10:30] = True                       # a person's object on the first image
    images.save("set/a.png", [LabelledObject(mine, "cat")])
    assert cb.dataset.apply(session, "dogs", "cup, table", False).startswith("applying: 0 of 3")
    final = _wait(cb, session)
    assert final.startswith("done: 3 of 3"), final
    first = images.objects("set/a.png")
    assert first[0].category == "cat" and first[0].origin == "user" and np.array_equal(first[0].mask, mine)
    assert all(o.origin == "proposal" and not o.reviewed for o in first[1:])
    assert all(e.state == "proposed" for e in images.entries[1:]) and images.entries[0].started

    rows = cb.dataset.queue(session)
    assert rows and [r[4] for r in rows] == sorted((r[4] for r in rows), reverse=True) and all(r[5] for r in rows)
    picture, listing = cb.dataset.pick(session, 0)
    assert picture.ndim == 3 and "proposal" in listing
    picked = session.dataset_pick
    rows_after, summary = cb.dataset.decide(session, accept=True)
    assert len(rows_after) == len(rows) - 1
    assert images.objects(picked[0])[picked[1]].reviewed
    with pytest.raises(UserError, match="Pick a proposal"):
        cb.dataset.decide(session, accept=False)

    path = cb.dataset.export(session, ["coco", "yolo"], "reviewed only")
    with zipfile.ZipFile(path) as z:
        doc = json.loads(z.read("instances.json"))
        assert "yolo/data.yaml" in z.namelist() and "yolo/images/train/set/nested/b.png" in z.namelist()
    assert doc["untrained"] is True and len(doc["annotations"]) == 2       # the person's + the accepted one
    everything = cb.dataset.export(session, ["coco"], "all (proposals too)")
    with zipfile.ZipFile(everything) as z:
        assert len(json.loads(z.read("instances.json"))["annotations"]) > 2

    folder = Path(session.files_dir)
    cb.files.end_session(session)
    assert not folder.exists() and session.dataset is None


def test_cancel_stops_between_images(cb):
    session = Session()
    cb.dataset.upload(session, _uploads(cb))
    cb.dataset.apply(session, "", "cup", False)
    cb.dataset.cancel(session)
    line = _wait(cb, session)
    assert line.startswith("cancelled") or line.startswith("done")
    with pytest.raises(UserError, match="Nothing is running"):
        cb.dataset.cancel(session)
    cb.files.end_session(session)


def test_bounds_and_bad_requests(cb, tmp_path):
    small = ImageSet(tmp_path / "s", max_images=2, max_bytes=10 << 20)
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(_png(i))
    notes = small.add_files([str(tmp_path / f"{i}.png") for i in range(3)])
    assert len(small.entries) == 2 and notes == ["2.png: the set is full (2 images)"]
    tiny = ImageSet(tmp_path / "t", max_bytes=100)
    with pytest.raises(UserError, match="used its 0 MB"):
        tiny.add_files([str(tmp_path / "0.png")])
    session = Session()
    with pytest.raises(UserError, match="set is empty"):
        cb.dataset.apply(session, "dogs", "", False)
    with pytest.raises(UserError, match="not an upload"):
        cb.dataset.upload(session, [str(tmp_path / "0.png")])
    cb.dataset.upload(session, [_uploads(cb)[1]])
    with pytest.raises(UserError, match="Say what to apply"):
        cb.dataset.apply(session, "", "", False)
    cb.files.end_session(session)


def test_an_export_past_the_quota_is_refused_and_removed(tmp_path):
    images = ImageSet(tmp_path / "q", max_bytes=4000)
    (tmp_path / "a.png").write_bytes(_png(1))
    images.add_files([str(tmp_path / "a.png")])
    images.save("a.png", [LabelledObject(np.ones((40, 56), bool), "cat")])
    with pytest.raises(UserError, match="does not fit"):
        images.export(["coco", "yolo", "voc", "labelme", "panoptic", "semantic"], False, ExportMeta())
    assert not (images.root / "exports").exists()
