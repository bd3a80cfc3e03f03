"""demo.biggallery and the Search tab's large gallery (`python app.py --gallery PATH`):
paging, the model check, hits drawn from their thumbnails or source images, missing
sources, sessions.

The gallery is real and on disk: 8 COCO128 images copied to a temporary folder, ingested
with their ground-truth masks (`core.gallery.ingest.ingest`) and embedded by the app's own untrained
CLIP ViT-B-32, so the app's model matches it; a second one made with the fake embedder
(core/bench/fakes.py) does not.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.engine import EngineSettings
from core.gallery.gallery import Gallery, ObjectRecord
from core.gallery.browse import hit_thumbnail
from core.gallery.ingest import IngestSettings, coco_tasks, ingest
from core.gallery.thumbs import THUMBS_DIR
from core.gallery.thumbs import OUTLINE_COLOR
from demo.biggallery import LargeGallery, hit_picture, placeholder
from demo import rendering
from demo.callbacks import Callbacks
from demo.context import AppContext, AppSettings
from demo.state import Session, UserError

from core.bench.fakes import fake_models

REPO = Path(__file__).resolve().parents[1]
TINY = EngineSettings(sam="vit_tiny", untrained=True, device="cpu", clip="ViT-B-32")
PAGE = 7
TILE = 64


def _copied_tasks(coco_dir: Path, folder: Path, limit: int):
    """COCO tasks of the first `limit` images, their files copied into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for task in coco_tasks(coco_dir / "instances.json", coco_dir / "images", limit=limit):
        shutil.copy(task.path, folder / Path(task.path).name)
    return coco_tasks(coco_dir / "instances.json", folder, limit=limit)


@pytest.fixture(scope="module")
def root(coco_dir, tmp_path_factory) -> Path:
    """A folder holding images/ (8 COCO128 images), thumbed/coco8 (their gallery, crop,
    cosine, with thumbnails) and coco8 (the same without thumbs/: what --no-thumbnails
    or an older build gives, see tests/test_ingest.py)."""
    root = tmp_path_factory.mktemp("big")
    probe = AppContext(TINY, AppSettings(cache_dir=root / "cache"))
    assert probe.load_models(), probe.load_error
    tasks = _copied_tasks(coco_dir, root / "images", 8)
    ingest(root / "thumbed" / "coco8", tasks, probe.engine, IngestSettings(oracle_masks=True, view="crop"),
           source="coco", warn=lambda message: None)
    shutil.copytree(root / "thumbed" / "coco8", root / "coco8", ignore=shutil.ignore_patterns(THUMBS_DIR))
    return root


def _context(root: Path, gallery: Path) -> AppContext:
    settings = AppSettings(cache_dir=root / "cache", gallery_path=gallery, page_size=PAGE,
                           page_tile_side=TILE, display_max_side=160, gallery_views=("crop",))
    context = AppContext(TINY, settings)
    assert context.load_models(), context.load_error   # the same models (cached per process)
    return context


@pytest.fixture(scope="module")
def ctx(root) -> AppContext:
    """The app's context with its models loaded and the gallery without thumbnails."""
    return _context(root, root / "coco8")


@pytest.fixture(scope="module")
def cb(ctx) -> Callbacks:
    return Callbacks(ctx)


def _all_pages(cb: Callbacks, session: Session, text: str) -> list:
    """Every page of a text query: search, then Next until there is no next page."""
    pages = [cb.search.search_large(session, "text", text)]
    while pages[-1].has_next:
        pages.append(cb.search.turn_page(session, 1))
    return pages


def test_pages_are_disjoint_consecutive_and_make_up_the_top_k(cb, ctx):
    session = Session()
    pages = _all_pages(cb, session, "a dog")
    total = len(ctx.large)
    assert total > 3 * PAGE and len(pages) == -(-total // PAGE)
    ranks = [int(t[1].split()[0][1:]) for p in pages for t in p.tiles]
    assert ranks == list(range(1, total + 1))                   # consecutive, no gaps, no repeats
    assert pages[0].line.startswith(f"Results 1-{PAGE} of {total} objects · page 1")
    assert f"Results {PAGE + 1}-{2 * PAGE} of {total}" in pages[1].line and "view crop" in pages[1].line
    assert "(the last)" in pages[-1].line and not pages[-1].has_next
    assert [p.has_prev for p in pages] == [False] + [True] * (len(pages) - 1)
    # the union of the pages is the direct search's top k, in the same order
    query = ctx.engine.embedder.embed_texts(["a dog"])
    direct = Gallery.load(ctx.settings.gallery_path).search(query, k=total)[0]
    shown = []
    for number in range(len(pages)):
        page = cb.search.show_page(session, number * PAGE)
        shown += [h.record.object_id for h in page.session.hits]
    assert shown == [h.record.object_id for h in direct]
    # the session keeps the query vector and the offset, and only the page shown
    assert session.page_query.shape == (query.shape[1],) and len(session.hits) <= PAGE
    # Previous goes back; on page 1 it is refused with a message
    cb.search.show_page(session, PAGE)
    back = cb.search.turn_page(session, -1)
    assert session.page_offset == 0 and not back.has_prev
    with pytest.raises(UserError, match="first page"):
        cb.search.turn_page(session, -1)
    # a new query starts on page 1
    cb.search.turn_page(session, 1)
    again = cb.search.search_large(session, "text", "a red car")
    assert session.page_offset == 0 and not again.has_prev and again.line.startswith("Results 1-")


def test_tiles_are_small_outlined_source_images(cb, ctx):
    session = Session()
    out = cb.search.search_large(session, "text", "a person")
    for picture, caption in out.tiles:
        assert max(picture.shape[:2]) <= TILE and picture.dtype == np.uint8
        assert (picture == OUTLINE_COLOR).all(-1).any(), caption   # the object is outlined
        assert caption.startswith("#") and "cos" in caption and "missing" not in caption
    assert "Select a tile" in out.status and "could not be read" not in out.status
    # selected: the source image, larger, on the hit canvas, its object selected there
    message, md = cb.search.show_hit(session, 2)
    shown = json.loads(message)
    hit = session.hits[2]
    h, w = Image.open(hit.record.source).size[::-1]
    assert shown["size"] == [h, w] and max(shown["display"]) == min(160, max(h, w))
    assert shown["selection"]["source"] == "search" and shown["src"].startswith("gradio_api/file=")
    assert md.startswith("**#3**") and Path(hit.record.source).name in md


def test_a_missing_source_image_gives_a_placeholder_and_a_note(cb, ctx):
    session = Session()
    first = cb.search.search_large(session, "text", "a cup")
    source = Path(session.hits[1].record.source)
    hidden = source.with_suffix(".hidden")
    source.rename(hidden)
    try:
        out = cb.search.show_page(session, 0)
        missing = [i for i, h in enumerate(session.hits) if h.record.source == str(source)]
        assert 1 in missing
        for i in missing:
            picture, caption = out.tiles[i]
            assert np.array_equal(picture, placeholder(TILE)) and "source image missing" in caption
        assert "could not be read" in out.status and source.name in out.status and "\n" not in out.status
        assert str(source.parent) not in out.status                 # the name, not the server path
        message, md = cb.search.show_hit(session, 1)                       # no exception: a notice
        assert "Source image missing" in json.loads(message)["notice"] and "⚠️" in md
        assert [t[1] for t in out.tiles if "missing" not in t[1]] == \
               [t[1] for i, t in enumerate(first.tiles) if i not in missing]
        # an unreadable file (not an image) reads the same way
        junk = source.with_name("junk.jpg")
        junk.write_bytes(b"not an image")
        picture, problem = hit_picture(ObjectRecord(str(junk), (0, 0, 4, 4), "crop"), TILE)
        assert problem.startswith("junk.jpg: ") and np.array_equal(picture, placeholder(TILE))
    finally:
        if hidden.exists():
            hidden.rename(source)


def test_tiles_are_thumbnails_and_need_no_source_images(root):
    cb = Callbacks(_context(root, root / "thumbed" / "coco8"))
    session = Session()
    first = cb.search.search_large(session, "text", "a person")
    gallery = cb.ctx.large.gallery
    for (picture, caption), hit in zip(first.tiles, session.hits):
        thumb = hit_thumbnail(gallery, hit.record)
        assert thumb is not None and max(picture.shape[:2]) <= TILE and "missing" not in caption
        assert picture.shape[:2] == rendering.thumbnail(thumb, TILE).shape[:2]
    hidden = root / "images.hidden"
    (root / "images").rename(hidden)                            # every source photo gone
    try:
        again = cb.search.show_page(session, 0)
        assert [t[1] for t in again.tiles] == [t[1] for t in first.tiles]   # real tiles, no placeholders
        assert all(np.array_equal(a[0], b[0]) for a, b in zip(again.tiles, first.tiles))
        assert "could not be read" not in again.status
        message, md = cb.search.show_hit(session, 1)                   # selected: the thumbnail, with a notice
        shown = json.loads(message)
        assert "Full picture missing" in shown["notice"] and "thumbnail" in md and "⚠️" in md
        assert shown["size"] == list(hit_thumbnail(gallery, session.hits[1].record).shape[:2])
    finally:
        hidden.rename(root / "images")
    message, _ = cb.search.show_hit(session, 1)                        # back: the full picture
    assert "notice" not in json.loads(message)


def test_two_sessions_page_independently(cb):
    a, b = Session(), Session()
    a_first = cb.search.search_large(a, "text", "a dog")
    b_first = cb.search.search_large(b, "text", "a bowl of food")
    cb.search.turn_page(a, 1)
    a_third = cb.search.turn_page(a, 1)
    assert a.page_offset == 2 * PAGE and b.page_offset == 0
    b_second = cb.search.turn_page(b, 1)
    assert b.page_offset == PAGE and a.page_offset == 2 * PAGE
    assert b_second.line.startswith(f"Results {PAGE + 1}-") and a_third.line.startswith(f"Results {2 * PAGE + 1}-")
    assert not np.array_equal(a.page_query, b.page_query)
    assert "text 'a dog'" in a_first.status and "text 'a bowl of food'" in b_first.status
    assert {h.rank for h in a.hits}.isdisjoint({h.rank for h in b.hits})


def test_a_gallery_of_another_model_says_so_and_the_examples_still_work(cb, ctx, coco_dir, tmp_path,
                                                                       monkeypatch):
    tasks = _copied_tasks(coco_dir, tmp_path / "images", 2)
    ingest(tmp_path / "fake", tasks, fake_models(), IngestSettings(oracle_masks=True), source="coco",
           warn=lambda message: None)
    # checked in the start-up thread, once the models are loaded
    other = AppContext(TINY, AppSettings(cache_dir=tmp_path / "cache", gallery_path=tmp_path / "fake"))
    other.start(build_gallery=False).join(timeout=300)
    assert other.large.checked and "another model" in other.large.mismatch
    line = other.large_status()
    assert line.startswith("⚠️ Your gallery: fake") and "cannot be searched" in line and "\n" not in line
    # searching it: one clear message, no traceback
    monkeypatch.setattr(ctx, "large", other.large)
    with pytest.raises(UserError, match="another model") as caught:
        cb.search.search_large(Session(), "text", "a dog")
    assert "\n" not in str(caught.value) and "clip: gallery has 'fake'" in str(caught.value)
    # the example gallery is searched as before
    example = tmp_path / "examples"
    example.mkdir()
    pil = Image.open(REPO / "examples" / "coffee.jpg")
    pil.thumbnail((96, 96))
    pil.save(example / "coffee.jpg")
    mine = Callbacks(AppContext(TINY, AppSettings(examples_dir=example, cache_dir=tmp_path / "cache",
                                                  gallery_views=("crop",), gallery_max_objects=2,
                                                  gallery_path=tmp_path / "fake")))
    assert mine.ctx.load_models()
    mine.ctx.large.check(mine.ctx.engine.embedder.model_info)
    _, tiles, status = mine.search.search(Session(), "text", "a cup", "crop", "cosine", 2, False)
    assert tiles and "results for text 'a cup'" in status


def test_the_search_tab_offers_the_gallery_and_pages(ctx, tmp_path):
    import gradio as gr

    from demo.shell import build_demo

    demo = build_demo(ctx)
    blocks = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    for wanted in ("search-gallery", "large-info", "page-prev", "page-next", "page-line"):
        assert wanted in blocks, wanted
    where = blocks["search-gallery"]
    assert isinstance(where, gr.Radio) and where.value == "large" and where.visible
    assert [value for _, value in where.choices] == ["examples", "large"]
    assert where.choices[1][0] == f"Your gallery: coco8 ({len(ctx.large)} objects)"
    assert not blocks["example-controls"].visible      # its view and metric are fixed: not offered
    # without a gallery: the examples only, the choice hidden, their controls usable
    plain = build_demo(AppContext(TINY, AppSettings(cache_dir=tmp_path, gallery_views=("crop",))))
    blocks = {getattr(b, "elem_id", None): b for b in plain.blocks.values()}
    assert not blocks["search-gallery"].visible and blocks["search-gallery"].value == "examples"
    assert blocks["example-controls"].visible


def test_large_gallery_status_before_and_after_the_check(ctx):
    large = LargeGallery(ctx.settings.gallery_path)
    assert large.label() == f"Your gallery: coco8 ({len(large)} objects)"
    assert "checked once the models are loaded" in large.status()
    assert large.check(ctx.engine.embedder.model_info) is None
    assert large.status().endswith("(fixed when it was built).") and "**crop**" in large.status()
