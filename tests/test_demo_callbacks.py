"""The app's callbacks without a browser: segment, compare, search, refer, errors, isolation.

Small untrained models (SAM "vit_tiny", CLIP ViT-B-32 random) and two downscaled copies
of the example images, so the example gallery builds in seconds.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.engine import EngineSettings
from core.masks import png_to_mask, rle_to_mask
from demo.callbacks import Callbacks, canvas_scale
from demo.context import AppContext, AppSettings, ModelsUnavailable
from demo.state import CLICK_MODES, Session, UserError

REPO = Path(__file__).resolve().parents[1]
POS, NEG, BOX, PICK = list(CLICK_MODES)
TINY = EngineSettings(sam="vit_tiny", untrained=True, device="cpu", clip="ViT-B-32")


@pytest.fixture(scope="module")
def small_examples(tmp_path_factory) -> Path:
    """Two example photos shrunk to 160 px on the longer side."""
    folder = tmp_path_factory.mktemp("examples")
    for name in ("chelsea_cat.jpg", "coffee.jpg"):
        pil = Image.open(REPO / "examples" / name)
        pil.thumbnail((160, 160))
        pil.save(folder / name)
    return folder


@pytest.fixture(scope="module")
def ctx(small_examples, tmp_path_factory) -> AppContext:
    settings = AppSettings(examples_dir=small_examples, gallery_views=("mask", "crop"),
                           gallery_max_objects=4, cache_dir=tmp_path_factory.mktemp("cache"),
                           display_max_side=120)
    context = AppContext(TINY, settings)
    assert context.load_models(), context.load_error
    return context


@pytest.fixture(scope="module")
def cb(ctx) -> Callbacks:
    return Callbacks(ctx)


def loaded(cb: Callbacks, index: int = 0) -> Session:
    session = Session()
    out = cb.load_example(session, index)
    assert out[0] is session
    return session


def test_load_example_gives_canvas_info_and_status(cb):
    session = Session()
    sess, canvas, tiles, info, png, rle, status = cb.load_example(session, 0)
    assert sess.image is not None and sess.image.dtype == np.uint8
    # the canvas is the image scaled to display_max_side (120) and nothing drawn yet
    h, w = sess.image.shape[:2]
    assert max(canvas.shape[:2]) == 120 and canvas.shape[2] == 3
    assert tiles == [] and png is None and rle is None
    assert "Loaded chelsea_cat.jpg" in status and "No object selected" in info


def test_click_maps_canvas_pixels_to_image_pixels_and_predicts(cb):
    session = loaded(cb)
    scale = canvas_scale(session.image, 120)
    sess, canvas, tiles, info, png, rle, status = cb.click(session, POS, [60, 40])
    points, labels = sess.points()
    np.testing.assert_allclose(points[0], [60 / scale, 40 / scale], atol=1e-3)
    assert labels.tolist() == [1]
    # one point is ambiguous: 3 candidates with scores, best first, the first selected
    assert len(tiles) == 3 and "(selected)" in tiles[0][1]
    assert sess.selection == "prompt" and sess.selected_mask() is not None
    assert "Mask updated" in status and "candidate #1 of 3" in info
    # the overlay changed the picture
    assert not np.array_equal(canvas, cb.render_canvas(Session(image=sess.image)))


def test_downloads_hold_the_selected_mask(cb):
    session = loaded(cb)
    sess, *_, png, rle, _ = cb.click(session, POS, [50, 50])
    mask = sess.selected_mask()
    if not mask.any():
        pytest.skip("the untrained model gave an empty mask for this click")
    assert np.array_equal(png_to_mask(Path(png).read_bytes()), mask)
    ann = json.loads(Path(rle).read_text())
    assert np.array_equal(rle_to_mask(ann["segmentation"]), mask)
    x, y, bw, bh = ann["bbox"]
    ys, xs = np.nonzero(mask)
    assert (x, y, x + bw, y + bh) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert ann["area"] == int(mask.sum())


def test_negative_point_undo_and_clear(cb):
    session = loaded(cb)
    cb.click(session, POS, [60, 40])
    cb.click(session, NEG, [10, 10])
    assert session.points()[1].tolist() == [1, 0]
    assert len(session.candidates.masks) == 1          # two points are not ambiguous
    cb.undo(session)
    assert session.points()[1].tolist() == [1] and len(session.candidates.masks) == 3
    cb.clear(session)
    assert session.prompts == [] and session.selected_mask() is None
    with pytest.raises(UserError, match="Nothing to undo"):
        cb.undo(session)


def test_box_takes_two_clicks_and_orders_corners(cb):
    session = loaded(cb)
    *_, status = cb.click(session, BOX, [100, 70])
    assert "first corner" in status and session.pending_corner() is not None
    assert session.candidates is None
    cb.click(session, BOX, [20, 10])
    box = session.box()
    scale = canvas_scale(session.image, 120)
    assert box[0] < box[2] and box[1] < box[3]
    np.testing.assert_allclose(box[:2], [20 / scale, 10 / scale], atol=1e-3)
    assert session.pending_corner() is None and len(session.candidates.masks) == 1
    cb.click(session, BOX, [50, 50])
    with pytest.raises(UserError, match="too small"):
        cb.click(session, BOX, [50.5, 50.5])
    assert session.pending_corner() is not None        # the first corner is kept


def test_choose_candidate(cb):
    session = loaded(cb)
    cb.click(session, POS, [60, 40])
    sess, canvas, tiles, info, *_ = cb.choose_candidate(session, 2)
    assert sess.chosen == 2 and "(selected)" in tiles[2][1] and "candidate #3 of 3" in info
    assert np.array_equal(sess.selected_mask(), sess.candidates.masks[2])
    with pytest.raises(UserError):
        cb.choose_candidate(session, 7)


def test_everything_then_pick(cb):
    session = loaded(cb)
    *out, status = cb.everything(session)
    assert session.auto is not None
    if not len(session.auto.masks):
        pytest.skip("no automatic masks from the untrained model")
    mask0 = session.auto.masks[0]
    ys, xs = np.nonzero(mask0)
    scale = canvas_scale(session.image, 120)
    cb.click(session, PICK, [xs[0] * scale, ys[0] * scale])
    assert session.selection == "auto"
    picked = session.selected_mask()
    assert picked[ys[0], xs[0]]


def test_errors_are_user_errors_with_clear_messages(cb, tmp_path):
    session = Session()
    with pytest.raises(UserError, match="upload one or pick an example"):
        cb.click(session, POS, [1, 1])
    bad = tmp_path / "not_an_image.png"
    bad.write_bytes(b"hello, this is text")
    with pytest.raises(ValueError, match="not an image format"):
        cb.load_upload(session, str(bad))
    assert session.image is None                      # the failed upload changed nothing
    session = loaded(cb)
    with pytest.raises(UserError, match="No object selected"):
        cb.compare(session)
    with pytest.raises(UserError, match="Type a text"):
        cb.search(session, "text", "  ", "crop", "cosine", 5, True)
    with pytest.raises(UserError, match="No object selected"):
        cb.search(session, "selected object", "", "crop", "cosine", 5, True)
    with pytest.raises(UserError, match="Type a referring expression"):
        cb.refer(session, "   ")
    with pytest.raises(UserError, match="Type a referring expression"):
        cb.parse_expression("   ")
    with pytest.raises(UserError, match="Unknown metric"):
        cb.search(session, "text", "a cat", "crop", "dot", 5, True)


def test_search_text_and_object_cosine_and_l2_rank_alike(cb, ctx):
    session = loaded(cb)
    _, tiles, status = cb.search(session, "text", "a cat", "crop", "cosine", 3, True)
    total = len(ctx.gallery_set.get_ready()["crop"])
    assert len(tiles) == min(3, total) and f"among {total} objects" in status
    cb.click(session, POS, [60, 40])
    _, tiles_cos, _ = cb.search(session, "selected object", "", "crop", "cosine", 5, True)
    ids_cos = [h.id for h in session.hits]
    cos_scores = [h.score for h in session.hits]
    _, tiles_l2, _ = cb.search(session, "selected object", "", "crop", "l2", 5, True)
    ids_l2 = [h.id for h in session.hits]
    assert ids_cos == ids_l2                                   # unit vectors: same ranking
    np.testing.assert_allclose([h.score for h in session.hits], 2 - 2 * np.array(cos_scores), atol=1e-4)
    assert tiles_l2[0][1].startswith("#1 d²") and tiles_cos[0][1].startswith("#1 cos")
    picture, md = cb.show_hit(session, 0)
    assert picture.ndim == 3 and "score" in md


def test_compare_shows_every_view_with_neighbours_where_indexed(cb):
    from core.views import VIEW_NAMES

    session = loaded(cb)
    cb.click(session, POS, [60, 40])
    if not session.selected_mask().any():
        pytest.skip("empty mask from the untrained model")
    _, views, tiles, status = cb.compare(session)
    assert len(views) == len(tiles) == len(VIEW_NAMES)
    for name, view, nn in zip(VIEW_NAMES, views, tiles):
        assert view.ndim == 3 and view.dtype == np.uint8
        assert (len(nn) > 0) == (name in ("mask", "crop")), name
    assert "no gallery for" in status


def test_sessions_are_isolated(cb):
    """Two sessions: prompts, masks and gallery additions never leak between them."""
    a, b = loaded(cb, 0), loaded(cb, 1)
    cb.click(a, POS, [60, 40])
    assert b.prompts == [] and b.candidates is None
    assert a.image_name != b.image_name
    if a.selected_mask().any():
        _, info, status = cb.add_selected(a)
        assert "Added 1 object" in status and "1 object(s)" in info
        assert b.user_records == [] and b.user_embeddings == {}
        _, tiles_a, status_a = cb.search(a, "text", "a cat", "crop", "cosine", 50, True)
        _, tiles_b, status_b = cb.search(b, "text", "a cat", "crop", "cosine", 50, True)
        assert len(tiles_a) == len(tiles_b) + 1
        assert any("mine:" in caption for _, caption in tiles_a)
        assert not any("mine:" in caption for _, caption in tiles_b)
    # gr.State deep-copies its initial value per session: copies share nothing mutable
    fresh = Session()
    one, two = copy.deepcopy(fresh), copy.deepcopy(fresh)
    one.prompts.append("x")
    assert two.prompts == [] and fresh.prompts == []


def test_example_gallery_is_cached_on_disk(ctx, small_examples):
    from core.example_gallery import SharedGallerySet

    first = ctx.galleries()
    again = SharedGallerySet(small_examples, ctx.settings.cache_dir, ctx.settings.gallery_views,
                             max_objects=ctx.settings.gallery_max_objects,
                             automask=ctx.automask_settings())
    engine = ctx.engine
    loaded_set = again.get(lambda: engine.segmenter, lambda: engine.embedder, engine.settings.sam)
    assert again.loaded_from_cache
    for view in ctx.settings.gallery_views:
        np.testing.assert_array_equal(loaded_set[view].embeddings, first[view].embeddings)
    assert "objects x 2 views" in ctx.gallery_status()


def test_missing_weights_are_explained_and_untrained_is_offered(tmp_path):
    settings = EngineSettings(sam="vit_b", sam_checkpoint=str(tmp_path / "missing.pth"), device="cpu")
    context = AppContext(settings, AppSettings(cache_dir=tmp_path))
    assert not context.load_models()
    assert "missing.pth" in context.load_error
    banner = context.banner()
    assert "weights are missing" in banner and "Use untrained models" in banner
    with pytest.raises(ModelsUnavailable, match="untrained"):
        Callbacks(context).load_example(Session(), 0)


def test_parse_expression_shows_noun_and_direction(cb):
    md = cb.parse_expression("the second cat from the rigth")
    assert "**noun:** cat" in md and "**direction:** right" in md and "**ordinal:** 2" in md
    assert "rigth → right" in md
    with pytest.raises(UserError, match="Type a referring expression"):
        cb.parse_expression("")


def test_refer_chooses_by_direction_among_the_session_masks(cb):
    """With two candidate objects (left and right squares) 'on the left' picks the left one
    and makes it the selection."""
    from core.automask import AutoMasks

    session = loaded(cb)
    h, w = session.image.shape[:2]
    left, right = np.zeros((h, w), bool), np.zeros((h, w), bool)
    left[h // 4: 3 * h // 4, 5: w // 3] = True
    right[h // 4: 3 * h // 4, 2 * w // 3: w - 5] = True
    masks = np.stack([right, left])
    boxes = np.array([[2 * w // 3, h // 4, w - 5, 3 * h // 4], [5, h // 4, w // 3, 3 * h // 4]], np.float32)
    session.auto = AutoMasks(masks=masks, scores=np.array([0.9, 0.8], np.float32), boxes=boxes)
    sess, tiles, picture, status = cb.refer(session, "the cat on the left")
    assert np.array_equal(sess.selected_mask(), left) and sess.selection == "refer"
    assert len(tiles) == 2 and sum("CHOSEN" in c for _, c in tiles) == 1
    assert picture.shape == session.image.shape and "direction 'left'" in status
    sess, *_ = cb.refer(session, "the cat on the right")
    assert np.array_equal(sess.selected_mask(), right)
