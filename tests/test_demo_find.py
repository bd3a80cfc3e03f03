"""The Find & label panel's callbacks: find all, more like this, label everything, views, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.engine import EngineSettings
from demo.callbacks import Callbacks
from demo.context import AppContext, AppSettings
from demo.state import Session, UserError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cb(tmp_path_factory) -> Callbacks:
    folder = tmp_path_factory.mktemp("examples")
    for name in ("chelsea_cat.jpg", "coffee.jpg"):
        pil = Image.open(REPO / "examples" / name)
        pil.thumbnail((160, 160))
        pil.save(folder / name)
    ctx = AppContext(EngineSettings(sam="vit_tiny", untrained=True, device="cpu", clip="ViT-B-32"),
                     AppSettings(examples_dir=folder, gallery_views=("crop",), cache_dir=tmp_path_factory.mktemp("c"),
                                 display_max_side=120, work_max_side=200))
    assert ctx.load_models(), ctx.load_error
    return Callbacks(ctx)


def loaded(cb) -> Session:
    session = Session()
    cb.segment.load_example(session, 0)
    return session


def test_find_all_draws_and_lists_the_instances(cb):
    session = loaded(cb)
    picture, listing = cb.find.find(session, "all the cats on the left")
    assert picture.ndim == 3 and picture.dtype == np.uint8
    assert "cat" in listing.splitlines()[0] and "ms" in listing
    count = len(listing.splitlines()) - 1
    assert (f"{count} cat" in listing) or ("no cat" in listing and count == 0)


@pytest.mark.parametrize("phrase, message", [("  ", "Type what to find"), ("on the left", "No noun"),
                                             ("x" * 300, "characters long")])
def test_bad_phrases_say_why(cb, phrase, message):
    with pytest.raises(UserError, match=message):
        cb.find.find(loaded(cb), phrase)


def test_more_like_this_needs_a_selection_then_finds(cb):
    session = loaded(cb)
    with pytest.raises(UserError, match="No object selected"):
        cb.find.like(session)
    h, w = session.image.shape[:2]
    cb.segment.commit_prompts(session, {"key": session.image_key, "points": [[w / 2, h / 2, 1]], "version": 1})
    if not session.selected_mask().any():
        pytest.skip("the untrained model gave an empty mask for this click")
    picture, listing = cb.find.like(session)
    assert picture.shape[2] == 3 and "like the example" in listing


def test_label_everything_writes_coco_files_and_switches_views(cb):
    from pycocotools.coco import COCO

    session = loaded(cb)
    picture, legend, files = cb.find.label(session, "cat, sofa, wall", "panoptic")
    assert picture.ndim == 3 and "panoptic" in legend and "Labelled" in legend
    names = {Path(f).name for f in files}
    assert names == {"panoptic.png", "panoptic.json", "semantic.png", "semantic.json", "instances.json"}
    inst = next(f for f in files if f.endswith("instances.json"))
    assert len(COCO(inst).getCatIds()) == 3 and json.loads(Path(inst).read_text())["untrained"] is True
    for view in ("semantic", "instances"):
        picture, legend = cb.find.show(session, view)
        assert picture.ndim == 3 and view in legend
    with pytest.raises(UserError, match="Unknown view"):
        cb.find.show(session, "cubist")
    with pytest.raises(UserError, match="limit"):
        cb.find.label(session, ", ".join(f"w{i}" for i in range(1200)), "panoptic")


def test_label_needs_a_labelling_before_a_view_and_sessions_do_not_share_it(cb):
    a, b = loaded(cb), loaded(cb)
    cb.find.label(a, "", "semantic")                  # COCO-panoptic by default
    assert a.labels is not None and b.labels is None
    with pytest.raises(UserError, match="Label everything"):
        cb.find.show(b, "panoptic")


def test_label_downloads_are_at_the_original_size(cb, tmp_path):
    """Issue 26 #3: an upload larger than the working size (200 px here) is labelled on its
    working copy, but panoptic.png, semantic.png and instances.json line up with the user's
    file (before: at the working size)."""
    from pycocotools import mask as mask_utils

    big = tmp_path / "big.jpg"
    with Image.open(REPO / "examples" / "chelsea_cat.jpg") as im:
        im.convert("RGB").resize((640, 427)).save(big)
    session = Session()
    cb.segment.load_all(session, big, "big.jpg")
    assert session.image.shape[:2] != (427, 640) and session.original_size == (427, 640)
    _, _, files = cb.find.label(session, "cat, sofa, wall", "panoptic")
    by_name = {Path(f).name: Path(f) for f in files}
    for png in ("panoptic.png", "semantic.png"):
        with Image.open(by_name[png]) as im:
            assert im.size == (640, 427), png
    inst = json.loads(by_name["instances.json"].read_text())
    assert (inst["images"][0]["height"], inst["images"][0]["width"]) == (427, 640)
    for ann in inst["annotations"]:
        assert tuple(ann["segmentation"]["size"]) == (427, 640)
        assert ann["area"] == int(mask_utils.area(ann["segmentation"]))
    pan = json.loads(by_name["panoptic.json"].read_text())
    assert (pan["images"][0]["height"], pan["images"][0]["width"]) == (427, 640)
    with Image.open(by_name["panoptic.png"]) as im:
        rgb = np.asarray(im.convert("RGB")).astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
    for seg in pan["annotations"][0]["segments_info"]:
        assert seg["area"] == int((ids == seg["id"]).sum())
