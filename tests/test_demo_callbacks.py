"""The app's callbacks without a browser: loading and checking images, the canvas's fast
path and commits, everything + pick, exports, stale results, compare, search, refer,
errors, isolation.

Small untrained models (SAM "vit_tiny", CLIP ViT-B-32 random) and two downscaled copies
of the example images, so the example gallery builds in seconds.
"""
from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.engine import EngineSettings
from core.io.masks import png_to_mask, rle_to_mask
from demo import maskdata
from demo.callbacks import Callbacks
from demo.panels.segment import iter_load
from demo.context import AppContext, AppSettings, ModelsUnavailable
from demo.state import Session, Stale, UserError

REPO = Path(__file__).resolve().parents[1]
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
                           display_max_side=120, work_max_side=200)
    context = AppContext(TINY, settings)
    assert context.load_models(), context.load_error
    return context


@pytest.fixture(scope="module")
def cb(ctx) -> Callbacks:
    return Callbacks(ctx)


def loaded(cb: Callbacks, index: int = 0) -> Session:
    session = Session()
    out = cb.segment.load_example(session, index)
    assert out.session is session and session.embedding is not None
    return session


def click(cb: Callbacks, session: Session, points, box=None, chosen: int = 0):
    return cb.segment.commit_prompts(session, {"key": session.image_key, "points": points, "box": box,
                                       "chosen": chosen, "version": session.prompt_version + 1})


def test_load_shows_the_picture_once_then_the_embedding(cb):
    session = Session()
    steps = list(iter_load(cb.segment, session, cb.segment.example_paths()[0], "chelsea_cat.jpg"))
    first = json.loads(steps[0].canvas)
    # the picture travels as a URL; the canvas message has sizes, never pixels
    assert first["src"].startswith("gradio_api/file=") and first["src"].endswith(".jpg")
    assert first["key"] == session.image_key and first["size"] == list(session.image.shape[:2])
    assert max(first["display"]) == 120 and first["name"] == "chelsea_cat.jpg"
    if len(steps) == 2:                       # not cached yet: "encoding" first, then "ready"
        assert first["phase"] == "encoding" and first["estimate_ms"] > 0
        assert "encoding" in steps[0].status
        assert json.loads(steps[1].canvas)["phase"] == "ready"
    assert "Loaded chelsea_cat.jpg" in steps[-1].status and "No object selected" in steps[-1].info
    exports = cb.segment.exports(session)
    assert exports.cutout is None and "Select an object" in exports.why
    src = Path(first["src"].split("=", 1)[1])
    assert src.is_file() and Image.open(src).size == (first["display"][1], first["display"][0])


def test_preview_is_the_fast_path_with_compact_masks(cb):
    session = loaded(cb)
    h, w = session.image.shape[:2]
    out = cb.segment.preview({"key": session.image_key, "points": [[w / 2, h / 2, 1]]})
    assert out["ok"] and out["key"] == session.image_key and len(out["masks"]) == 3
    display = cb.ws.display_size(session)
    for m in out["masks"]:
        mask = maskdata.decode_mask(m, display)
        assert mask.shape == display and isinstance(m["score"], float)
    # the best mask equals the committed (full-resolution) selection, scaled for display
    click(cb, session, [[w / 2, h / 2, 1]])
    best = maskdata.decode_mask(out["masks"][0], display)
    assert np.array_equal(best, maskdata.to_display(session.selected_mask(), display))
    hover = cb.segment.preview({"key": session.image_key, "points": [[w / 3, h / 3, 1]], "best_only": True})
    assert len(hover["masks"]) == 1
    # no session state is touched by the fast path; unknown images are answered, not raised
    assert cb.segment.preview({"key": "nope", "points": [[1, 1, 1]]}) == {"key": "nope", "ok": False,
                                                                  "reason": "not encoded"}
    assert not cb.segment.preview({"key": session.image_key, "points": [[1, 1, 7]]})["ok"]


def test_commit_points_box_negative_and_candidates(cb):
    session = loaded(cb)
    h, w = session.image.shape[:2]
    out = click(cb, session, [[w / 2, h / 3, 1]])
    assert session.selection.source == "prompt" and session.selection.of == 3
    assert "Mask updated" in out.status and "candidate #1 of 3" in out.info
    out = click(cb, session, [[w / 2, h / 3, 1]], chosen=2)
    assert session.selection.index == 2
    assert np.array_equal(session.selected_mask(), session.candidates.masks[2])
    # a negative point and a box together: one candidate
    out = click(cb, session, [[w / 2, h / 3, 1], [5, 5, 0]], box=[w * 0.6, h * 0.6, w * 0.1, h * 0.1])
    assert session.points()[1].tolist() == [1, 0] and session.box() is not None
    box = session.box()
    assert box[0] < box[2] and box[1] < box[3]                  # corners ordered
    assert "1 positive, 1 negative point(s), 1 box" in out.info and session.selection.of == 1
    with pytest.raises(UserError, match="too small"):
        click(cb, session, [], box=[10, 10, 10.5, 10.5])
    out = click(cb, session, [])
    assert session.selection is None and "No prompts" in out.status


def test_stale_and_out_of_order_results_are_dropped(cb):
    session = loaded(cb)
    with pytest.raises(Stale):
        cb.segment.commit_prompts(session, {"key": "another-image", "points": [[1, 1, 1]]})
    click(cb, session, [[10, 10, 1]])
    newer = session.prompt_version
    with pytest.raises(Stale):
        cb.segment.commit_prompts(session, {"key": session.image_key, "points": [[20, 20, 1]],
                                    "version": newer - 1})
    with pytest.raises(Stale):
        cb.segment.pick(session, {"key": "old", "x": 1, "y": 1})
    with pytest.raises(Stale):
        cb.segment.everything(session, "old")


def test_upload_then_example_while_encoding_keeps_the_last_choice(cb, tmp_path):
    """Both loads run; the session, the canvas message and the info all end on the example."""
    path = tmp_path / "my photo.png"
    Image.new("RGB", (90, 60), (40, 160, 90)).save(path)
    session = Session()
    upload = iter_load(cb.segment, session, path, "my photo.png")
    first = next(upload)                                 # shown, encoding...
    assert json.loads(first.canvas)["name"] == "my photo.png"
    example = list(iter_load(cb.segment, session, cb.segment.example_paths()[1], "coffee.jpg"))
    with pytest.raises(Stale):                           # the upload's embedding is dropped
        list(upload)
    assert session.image_name == "coffee.jpg" and "coffee.jpg" in example[-1].info
    assert json.loads(example[-1].canvas)["key"] == session.image_key


def test_uploads_are_checked_with_our_own_messages(cb, tmp_path):
    session = loaded(cb)
    key = session.image_key
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="'empty.jpg' is empty"):
        cb.segment.begin_load(session, empty, "empty.jpg")
    text = tmp_path / "notes.png"
    text.write_bytes(b"hello, this is text")
    with pytest.raises(UserError, match="not an image"):
        cb.segment.begin_load(session, text, "notes.png")
    good = io.BytesIO()
    Image.new("RGB", (300, 200), (200, 30, 30)).save(good, format="JPEG")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(good.getvalue()[: len(good.getvalue()) // 3])
    with pytest.raises(UserError, match="damaged or truncated|cannot be read"):
        cb.segment.begin_load(session, corrupt, "corrupt.jpg")
    assert session.image_key == key                     # the session is unchanged
    with pytest.raises(UserError, match="not an upload"):
        cb.files.upload_path("/etc/passwd", [str(tmp_path)])


def test_large_images_are_downscaled_and_exports_keep_the_original_size(cb, tmp_path, monkeypatch):
    path = tmp_path / "Big Photo.jpg"
    Image.new("RGB", (900, 600), (10, 120, 200)).save(path, quality=90)
    session = Session()
    out = cb.segment.load_all(session, path, "Big Photo.jpg")
    assert max(session.image.shape[:2]) == 200 and session.original_size == (600, 900)
    assert "downscaled from 900x600" in "".join(o.status for o in [out]) or "900x600" in out.info
    h, w = session.image.shape[:2]
    click(cb, session, [[w / 2, h / 2, 1]])
    ex = cb.segment.exports(session)
    assert Path(ex.cutout).name == "Big Photo_cutout.png" and Path(ex.mask_png).name == "Big Photo_mask.png"
    mask = png_to_mask(Path(ex.mask_png).read_bytes())
    assert mask.shape == (600, 900)
    np.testing.assert_array_equal(mask, maskdata.to_size(session.selected_mask(), (600, 900)))
    ann = json.loads(Path(ex.mask_rle).read_text())
    np.testing.assert_array_equal(rle_to_mask(ann["segmentation"]), mask)
    # too many pixels: refused with the app's own message (header only, nothing decoded)
    monkeypatch.setattr(maskdata, "MAX_UPLOAD_PIXELS", 500_000)
    with pytest.raises(UserError, match="megapixels"):
        cb.segment.begin_load(Session(), path, "Big Photo.jpg")


def test_cutout_has_alpha_equal_to_the_mask_and_coco_holds_all_objects(cb):
    session = loaded(cb)
    h, w = session.image.shape[:2]
    cb.segment.everything(session)
    click(cb, session, [[w / 2, h / 2, 1]])
    mask = session.selected_mask()
    if not mask.any():
        pytest.skip("the untrained model gave an empty mask for this click")
    ex = cb.segment.exports(session)
    rgba = np.asarray(Image.open(ex.cutout))
    assert rgba.shape[2] == 4
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    np.testing.assert_array_equal(rgba[..., 3] > 0, crop)
    np.testing.assert_array_equal(rgba[..., :3][crop], session.image[ys.min():ys.max() + 1,
                                                                     xs.min():xs.max() + 1][crop])
    coco = json.loads(Path(ex.coco).read_text())
    assert coco["images"][0]["file_name"] == "chelsea_cat.jpg"
    assert len(coco["annotations"]) == len(session.auto.masks) + 1
    assert sum(1 for a in coco["annotations"] if a.get("selected")) == 1
    last = coco["annotations"][-1]
    np.testing.assert_array_equal(rle_to_mask(last["segmentation"]), mask)
    x, y, bw, bh = last["bbox"]
    assert (x, y, x + bw, y + bh) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_everything_then_pick_smallest_or_nearest(cb):
    from core.sam.automask import AutoMasks

    session = loaded(cb)
    out = cb.segment.everything(session, session.image_key)
    assert session.auto is not None
    if len(session.auto.masks):
        message = json.loads(out.canvas)
        assert len(message["auto"]) == len(session.auto.masks)
    # a controlled set: a big mask and a small one inside it, and one a few pixels away
    h, w = session.image.shape[:2]
    big, small, far = (np.zeros((h, w), bool) for _ in range(3))
    big[10:60, 10:60] = True
    small[20:30, 20:30] = True
    far[10:40, 80:100] = True
    session.auto = AutoMasks(masks=np.stack([big, small, far]), scores=np.array([.9, .8, .7], np.float32),
                             boxes=np.zeros((3, 4), np.float32))
    cb.segment.pick(session, {"key": session.image_key, "x": 25, "y": 25})
    assert session.selection.source == "auto" and session.selection.index == 1
    cb.segment.pick(session, {"key": session.image_key, "x": 40, "y": 40})
    assert session.selection.index == 0
    cb.segment.pick(session, {"key": session.image_key, "x": 77.5, "y": 20})   # 2.5 px left of `far`
    assert session.selection.index == 2
    out = cb.segment.pick(session, {"key": session.image_key, "x": 120, "y": 100})
    assert session.selection.index == 2 and "No automatic mask there" in out.status


def test_pick_mask_rule():
    masks = np.zeros((2, 20, 20), bool)
    masks[0, 2:18, 2:18] = True
    masks[1, 5:8, 5:8] = True
    assert maskdata.pick_mask(masks, 6, 6, 3) == 1
    assert maskdata.pick_mask(masks, 15, 15, 3) == 0
    assert maskdata.pick_mask(masks, 19.5, 10, 3) == 0      # 2 px outside the edge
    assert maskdata.pick_mask(np.zeros((1, 20, 20), bool), 5, 5, 3) is None


def test_mask_encodings_round_trip():
    rng = np.random.default_rng(0)
    smooth = np.zeros((37, 53), bool)
    smooth[5:30, 10:40] = True
    ragged = rng.random((37, 53)) > 0.5
    for mask in (smooth, ragged, ~smooth, np.zeros((4, 4), bool)):
        data = maskdata.encode_mask(mask)
        np.testing.assert_array_equal(maskdata.decode_mask(data, mask.shape), mask)
    assert "runs" in maskdata.encode_mask(smooth) and "bits" in maskdata.encode_mask(ragged)
    assert sum(maskdata.row_rle(smooth)) == smooth.size


def test_errors_are_user_errors_with_clear_messages(cb):
    session = Session()
    with pytest.raises(UserError, match="upload one or pick an example"):
        cb.segment.everything(session)
    session = loaded(cb)
    with pytest.raises(UserError, match="No object selected"):
        cb.compare.compare(session)
    with pytest.raises(UserError, match="Type a text"):
        cb.search.search(session, "text", "  ", "crop", "cosine", 5, True)
    with pytest.raises(UserError, match="No object selected"):
        cb.search.search(session, "selected object", "", "crop", "cosine", 5, True)
    with pytest.raises(UserError, match="Type a referring expression"):
        cb.refer.refer(session, "   ")
    with pytest.raises(UserError, match="Unknown metric"):
        cb.search.search(session, "text", "a cat", "crop", "dot", 5, True)
    with pytest.raises(UserError, match="No automatic masks"):
        cb.segment.pick(session, {"key": session.image_key, "x": 1, "y": 1})


def test_search_text_and_object_cosine_and_l2_rank_alike(cb, ctx):
    session = loaded(cb)
    _, tiles, status = cb.search.search(session, "text", "a cat", "crop", "cosine", 3, True)
    total = len(ctx.gallery_set.get_ready()["crop"])
    assert len(tiles) == min(3, total) and f"among {total} objects" in status
    assert session.last_query == ("text", "a cat")
    click(cb, session, [[60, 40, 1]])
    _, tiles_cos, _ = cb.search.search(session, "selected object", "", "crop", "cosine", 5, True)
    ids_cos = [h.id for h in session.hits]
    cos_scores = [h.score for h in session.hits]
    _, tiles_l2, _ = cb.search.search(session, "selected object", "", "crop", "l2", 5, True)
    assert ids_cos == [h.id for h in session.hits]              # unit vectors: same ranking
    np.testing.assert_allclose([h.score for h in session.hits], 2 - 2 * np.array(cos_scores), atol=1e-4)
    assert tiles_l2[0][1].startswith("#1 d²") and tiles_cos[0][1].startswith("#1 cos")
    canvas, md = cb.search.show_hit(session, 0)
    message = json.loads(canvas)
    assert message["src"].startswith("gradio_api/file=") and "selection" in message and "score" in md


def test_compare_shows_every_view_with_neighbours_where_indexed(cb):
    from core.views import VIEW_NAMES

    session = loaded(cb)
    click(cb, session, [[60, 40, 1]])
    if not session.selected_mask().any():
        pytest.skip("empty mask from the untrained model")
    _, views, tiles, status = cb.compare.compare(session)
    assert len(views) == len(tiles) == len(VIEW_NAMES)
    for name, view, nn in zip(VIEW_NAMES, views, tiles):
        assert view.ndim == 3 and view.dtype == np.uint8
        assert (len(nn) > 0) == (name in ("mask", "crop")), name
    assert "no gallery for" in status


def test_sessions_are_isolated(cb):
    """Two sessions: prompts, masks and gallery additions never leak between them."""
    a, b = loaded(cb, 0), loaded(cb, 1)
    click(cb, a, [[60, 40, 1]])
    assert b.prompts == [] and b.candidates is None and b.selection is None
    assert a.image_name != b.image_name
    if a.selected_mask().any():
        _, info, status = cb.galleries.add_selected(a)
        assert "Added 1 object" in status and "1 object(s)" in info
        assert b.user_records == [] and b.user_embeddings == {}
        _, tiles_a, _ = cb.search.search(a, "text", "a cat", "crop", "cosine", 50, True)
        _, tiles_b, _ = cb.search.search(b, "text", "a cat", "crop", "cosine", 50, True)
        assert len(tiles_a) == len(tiles_b) + 1
        assert any("mine:" in caption for _, caption in tiles_a)
        assert not any("mine:" in caption for _, caption in tiles_b)
    # gr.State deep-copies its initial value per session: copies share nothing mutable
    fresh = Session()
    one, two = copy.deepcopy(fresh), copy.deepcopy(fresh)
    one.prompts.append("x")
    assert two.prompts == [] and fresh.prompts == []


def test_example_gallery_is_cached_on_disk(ctx, small_examples):
    from core.gallery.examples import SharedGallerySet

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


def test_encoder_time_is_measured_for_the_progress_estimate(ctx):
    seconds = ctx.measure_encoder()
    assert 0 < seconds < 120 and ctx.encode_estimate() > 0


def test_missing_weights_are_explained_and_untrained_is_offered(tmp_path):
    settings = EngineSettings(sam="vit_b", sam_checkpoint=str(tmp_path / "missing.pth"), device="cpu")
    context = AppContext(settings, AppSettings(cache_dir=tmp_path))
    assert not context.load_models()
    assert "missing.pth" in context.load_error
    banner = context.banner()
    assert "weights are missing" in banner and "Use untrained models" in banner
    with pytest.raises(ModelsUnavailable, match="untrained"):
        Callbacks(context).segment.load_example(Session(), 0)
    assert not Callbacks(context).segment.preview({"key": "x", "points": [[1, 1, 1]]})["ok"]


def test_parse_expression_shows_noun_and_direction(cb):
    md = cb.refer.parse_expression("the second cat from the rigth")
    assert "**noun:** cat" in md and "**direction:** right" in md and "**ordinal:** 2" in md
    assert "rigth → right" in md and "check the spelling" not in md
    unknown = cb.refer.parse_expression("asdf qwerty")      # issue 26 #9: say the noun is unknown
    assert "**noun:** qwerty (not an English word the app knows" in unknown
    with pytest.raises(UserError, match="Type a referring expression"):
        cb.refer.parse_expression("")


def test_refer_chooses_by_direction_and_draws_on_the_canvas(cb):
    """With two candidate objects (left and right squares) 'on the left' picks the left one,
    makes it the selection and sends it to the canvas."""
    from core.analysis import ImageAnalysis, analysis_key
    from core.sam.automask import AutoMasks

    session = loaded(cb)
    h, w = session.image.shape[:2]
    left, right = np.zeros((h, w), bool), np.zeros((h, w), bool)
    left[h // 4: 3 * h // 4, 5: w // 3] = True
    right[h // 4: 3 * h // 4, 2 * w // 3: w - 5] = True
    masks = np.stack([right, left])
    boxes = np.array([[2 * w // 3, h // 4, w - 5, 3 * h // 4], [5, h // 4, w // 3, 3 * h // 4]], np.float32)
    auto = AutoMasks(masks=masks, scores=np.array([0.9, 0.8], np.float32), boxes=boxes)
    # the image's shared analysis holds these two as its automatic masks (as if Everything ran)
    key = analysis_key(cb.ws.model(session), session.image_key, cb.ws.automask_settings())
    cb.ctx.engine.analyses.put(key, ImageAnalysis(auto))
    out, tiles = cb.refer.refer(session, "the cat on the left")
    assert np.array_equal(session.selected_mask(), left) and session.selection.source == "refer"
    assert len(tiles) == 2 and sum("CHOSEN" in c for _, c in tiles) == 1
    assert "direction 'left'" in out.status and "referring expression" in out.info
    sel = json.loads(out.canvas)["selection"]
    display = cb.ws.display_size(session)
    np.testing.assert_array_equal(maskdata.decode_mask(sel, display), maskdata.to_display(left, display))
    cb.refer.refer(session, "the cat on the right")
    assert np.array_equal(session.selected_mask(), right)


def _decoder_runs(segmenter):
    """A list that grows by one for every forward of SAM's mask decoder, and its hook."""
    runs = []
    handle = segmenter.sam.mask_decoder.register_forward_hook(lambda *a: runs.append(1))
    return runs, handle


def _hover_click_commit(cb, session, points, point) -> None:
    """What the canvas sends for one click with hover on: the hover preview at the pointer
    (best only), the click's preview (all candidates), then the commit."""
    key, seen = session.image_key, [p[:] for p in points]
    cb.segment.preview({"key": key, "points": seen + [[*point, 1]], "best_only": True})
    cb.segment.preview({"key": key, "points": seen + [[*point, 1]]})
    click(cb, session, seen + [[*point, 1]])


def test_one_decoder_run_per_click_with_hover_on(cb, monkeypatch):
    session = loaded(cb, 1)
    seg = cb.ws.segmenter(session)
    runs, handle = _decoder_runs(seg)
    try:
        h, w = session.image.shape[:2]
        clicks = [(w * 0.31, h * 0.42), (w * 0.57, h * 0.36), (w * 0.44, h * 0.71)]
        points = []
        for x, y in clicks:
            _hover_click_commit(cb, session, points, (x, y))
            points.append([x, y, 1])
        assert len(runs) == len(clicks)              # one decoder run per click (was 3)
        assert session.selection is not None and session.selection.source == "prompt"
        # the counter can fail: with the prediction cache off, each click costs three runs
        monkeypatch.setattr(seg.predictions, "max_bytes", 0)
        runs.clear()
        _hover_click_commit(cb, session, points, (w * 0.2, h * 0.2))
        assert len(runs) == 3
    finally:
        handle.remove()


def test_downloads_are_written_once_per_selection(cb):
    session = loaded(cb, 1)
    h, w = session.image.shape[:2]
    click(cb, session, [[w / 2, h / 2, 1]])
    first = cb.segment.exports(session)
    stamp = Path(first.mask_png).stat().st_mtime_ns
    assert cb.segment.exports(session) is first                    # nothing written again
    assert Path(first.mask_png).stat().st_mtime_ns == stamp
    click(cb, session, [[w / 2, h / 2, 1], [w / 4, h / 4, 1]])   # a new selection: new files
    assert cb.segment.exports(session) is not first


def test_my_gallery_keeps_each_image_once_and_is_bounded(cb, monkeypatch):
    from demo import settings as serving

    session = loaded(cb, 0)
    h, w = session.image.shape[:2]
    click(cb, session, [[w / 2, h / 2, 1]])
    if not session.selected_mask().any():
        pytest.skip("the untrained model gave an empty mask for this click")
    cb.galleries.add_selected(session)
    _, info, _ = cb.galleries.add_selected(session)          # the same image again
    assert "2 object(s) from 1 image(s)" in info and len(session.user_images) == 1
    monkeypatch.setattr(serving, "MY_GALLERY_OBJECTS", 2)
    with pytest.raises(UserError, match="limit of 2 objects"):
        cb.galleries.add_selected(session)
    monkeypatch.setattr(serving, "MY_GALLERY_OBJECTS", 400)
    monkeypatch.setattr(serving, "MY_GALLERY_IMAGES", 1)
    other = loaded(cb, 1)
    other.user_images, other.user_records = session.user_images, session.user_records
    other.user_embeddings = session.user_embeddings
    oh, ow = other.image.shape[:2]
    click(cb, other, [[ow / 2, oh / 2, 1]])
    if other.selected_mask().any():
        with pytest.raises(UserError, match="1 images, its limit"):
            cb.galleries.add_selected(other)


def _two_auto_masks(session):
    from core.sam.automask import AutoMasks

    h, w = session.image.shape[:2]
    masks = np.zeros((2, h, w), bool)
    masks[0, 10:60, 10:60] = True
    masks[1, 20:30, 70:90] = True
    session.auto = AutoMasks(masks=masks, scores=np.array([.9, .8], np.float32),
                             boxes=np.zeros((2, 4), np.float32))


def test_the_selection_follows_the_canvas_when_a_pick_is_dropped(cb):
    """Bug 2: 'Everything', a pick, then '+ point' (the canvas commits what it shows) or
    Ctrl+Z in pick mode (a pick with clear): the automatic selection and its downloads go."""
    session = loaded(cb)
    _two_auto_masks(session)
    key = session.image_key
    cb.segment.pick(session, {"key": key, "x": 25, "y": 25})
    assert session.selection.source == "auto" and cb.segment.exports(session).cutout
    out = cb.segment.commit_prompts(session, {"key": key, "points": [], "box": None, "chosen": 0,
                                              "version": session.prompt_version, "shown": "none"})
    assert session.selection is None and "No object selected" in out.info
    assert cb.segment.exports(session).cutout is None
    cb.segment.pick(session, {"key": key, "x": 25, "y": 25})
    out = cb.segment.pick(session, {"key": key, "clear": True})
    assert session.selection is None and "No object selected" in out.info
    assert cb.segment.exports(session).mask_rle is None
    # with the prompts still on the canvas, '+ point' selects their mask again
    h, w = session.image.shape[:2]
    click(cb, session, [[w / 2, h / 2, 1]])
    cb.segment.pick(session, {"key": key, "x": 25, "y": 25})
    cb.segment.commit_prompts(session, {"key": key, "points": [[w / 2, h / 2, 1]], "chosen": 0,
                                        "version": session.prompt_version, "shown": "prompt"})
    assert session.selection.source == "prompt"


def test_clearing_prompts_keeps_only_a_selection_the_canvas_still_shows(cb):
    session = loaded(cb)
    _two_auto_masks(session)
    key = session.image_key
    cb.segment.pick(session, {"key": key, "x": 25, "y": 25})
    empty = {"key": key, "points": [], "box": None, "version": session.prompt_version}
    cb.segment.commit_prompts(session, {**empty, "shown": "external"})
    assert session.selection is not None
    cb.segment.commit_prompts(session, empty)               # nothing shown: nothing selected
    assert session.selection is None


def test_everything_without_masks_ends_the_canvas_progress_line(cb, monkeypatch):
    from core.sam.automask import AutoMasks

    session = loaded(cb)
    h, w = session.image.shape[:2]
    none = AutoMasks(masks=np.zeros((0, h, w), bool), scores=np.zeros(0, np.float32),
                     boxes=np.zeros((0, 4), np.float32))
    monkeypatch.setattr(cb.ws, "automatic_masks", lambda s, on_partial=None: none)
    out = cb.segment.everything(session, session.image_key)
    message = json.loads(out.canvas)
    assert "No automatic masks" in message["notice"] and message["phase"] == "ready"


def test_downloads_of_untrained_models_say_so_and_the_note_says_what_coco_holds(cb):
    """Bug 8: "untrained": true in the COCO and RLE JSON; the note says when the COCO JSON
    holds only the selection."""
    from demo.panels.segment import downloads_note

    session = loaded(cb, 1)
    h, w = session.image.shape[:2]
    click(cb, session, [[w / 2, h / 2, 1]])
    if not session.selected_mask().any():
        pytest.skip("the untrained model gave an empty mask for this click")
    ex = cb.segment.exports(session)
    coco, rle = json.loads(Path(ex.coco).read_text()), json.loads(Path(ex.mask_rle).read_text())
    assert coco["untrained"] is True and "UNTRAINED" in coco["info"]["description"]
    assert rle["untrained"] is True and "UNTRAINED" in rle["note"] and "COCO compressed RLE" in rle["note"]
    assert ex.coco_selection_only and "holds only the selection" in downloads_note(ex)
    _two_auto_masks(session)
    ex = cb.segment.exports(session)
    assert not ex.coco_selection_only and "holds only" not in downloads_note(ex)
    assert "_objects.coco.json" in downloads_note(ex)


def test_downloads_of_trained_models_carry_no_untrained_marker(cb, monkeypatch):
    monkeypatch.setattr(type(cb.ctx.engine), "untrained", property(lambda self: False))
    doc = cb.segment.mark_untrained({"note": "x"})
    assert doc == {"note": "x"}


def test_everything_streams_the_masks_found_so_far_then_all_of_them(cb, monkeypatch):
    """Issue 20: Everything draws masks as they arrive: partial canvas messages (with the
    fraction done, the session untouched, a pick refused until the end), then the final set."""
    from core.sam.automask import AutoMasks
    from demo.panels.segment import iter_everything

    session = loaded(cb)
    h, w = session.image.shape[:2]
    masks = np.zeros((3, h, w), bool)
    masks[0, :10, :10] = masks[1, 20:40, 20:40] = masks[2, 50:60, 5:15] = True
    def auto(n):
        return AutoMasks(masks=masks[:n], scores=np.linspace(.9, .7, 3)[:n].astype(np.float32),
                         boxes=np.zeros((n, 4), np.float32))
    seen_during = []
    import threading
    gate = threading.Event()   # the work ends only once a partial answer was taken (no race)

    def fake(s, on_partial=None):
        on_partial(auto(1), 0.25)
        seen_during.append(s.auto)
        on_partial(auto(2), 0.5)
        assert gate.wait(30)
        return auto(3)

    monkeypatch.setattr(cb.ws, "automatic_masks", fake)
    session.auto = None
    answers = iter_everything(cb.segment, session, session.image_key)
    outs = [next(answers)]
    gate.set()
    outs += list(answers)
    messages = [json.loads(o.canvas) for o in outs]
    assert [len(m["auto"]) for m in messages][-1] == 3 and "partial" not in messages[-1]
    partial = [m for m in messages if "partial" in m]
    assert 1 <= len(partial) <= 2 and partial[-1]["partial"] in (0.25, 0.5)
    assert "so far" in outs[0].status and seen_during == [None]
    assert len(session.auto.masks) == 3

    def broken(s, on_partial=None):
        on_partial(auto(1), 0.25)
        raise RuntimeError("boom")

    monkeypatch.setattr(cb.ws, "automatic_masks", broken)
    with pytest.raises(RuntimeError, match="boom"):   # after any partial answers, the failure
        list(iter_everything(cb.segment, session, session.image_key))


def test_everything_partials_of_a_replaced_image_are_dropped(cb, monkeypatch):
    from core.sam.automask import AutoMasks
    from demo.panels.segment import iter_everything

    session = loaded(cb)
    first_key = session.image_key
    h, w = session.image.shape[:2]
    one = AutoMasks(masks=np.ones((1, h, w), bool), scores=np.ones(1, np.float32), boxes=np.zeros((1, 4), np.float32))

    def fake(s, on_partial=None):
        s.image_key = "another-image"      # the person loaded another picture meanwhile
        on_partial(one, 0.5)
        return one

    monkeypatch.setattr(cb.ws, "automatic_masks", fake)
    with pytest.raises(Exception) as caught:
        list(iter_everything(cb.segment, session, first_key))
    assert type(caught.value).__name__ == "Stale"


def _fresh_image(path: Path, seed: int) -> Path:
    """A picture no cache has seen (random content), saved at `path`."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (50 + seed % 7, 70, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("order", ["upload then upload", "example then upload", "upload then example"])
def test_an_image_chosen_while_another_encodes_is_encoded(cb, tmp_path, monkeypatch, order):
    """Issue 26 #1: the first image's encoding ends after the second was chosen. Before the fix
    the session then stored the FIRST image's embedding, the second's encode was skipped as
    "already encoded" and the canvas stayed on "encoding..." for good (8 of 8 tries)."""
    import threading

    seg = cb.segment.ws.segmenter(Session())
    real_set_image = seg.set_image
    for rep in range(8):
        seg._embeddings.clear()   # every image uncached, examples too
        first_is_upload, second_is_upload = order.startswith("upload"), order.endswith("upload")
        a = (_fresh_image(tmp_path / f"a{rep}.png", 2 * rep), f"a{rep}.png") if first_is_upload \
            else (cb.segment.example_paths()[0], "chelsea_cat.jpg")
        b = (_fresh_image(tmp_path / f"b{rep}.png", 2 * rep + 1), f"b{rep}.png") if second_is_upload \
            else (cb.segment.example_paths()[1], "coffee.jpg")
        entered, gate = threading.Event(), threading.Event()

        def slow_once(image, _entered=entered, _gate=gate):
            monkeypatch.setattr(seg, "set_image", real_set_image)   # only the first encode waits
            _entered.set()
            assert _gate.wait(30)
            return real_set_image(image)

        monkeypatch.setattr(seg, "set_image", slow_once)
        session = Session()
        first = iter_load(cb.segment, session, *a)
        assert json.loads(next(first).canvas)["phase"] == "encoding"
        outcome: list = []

        def finish_first(gen=first):
            try:
                outcome.extend(gen)
            except Stale as exc:
                outcome.append(exc)

        worker = threading.Thread(target=finish_first)
        worker.start()
        assert entered.wait(30)
        second = iter_load(cb.segment, session, *b)
        shown = next(second)
        gate.set()
        worker.join(30)
        assert isinstance(outcome[-1], Stale)                    # the first image's result is dropped
        last = list(second)[-1] if json.loads(shown.canvas)["phase"] == "encoding" else shown
        assert session.image_name == b[1] and session.encoded(), (rep, order)
        assert json.loads(last.canvas)["phase"] == "ready" and json.loads(last.canvas)["key"] == session.image_key


def test_refer_prepares_a_new_image_while_its_tab_is_open(cb, tmp_path, monkeypatch):
    """Issue 26 #5: an image loaded while the Refer tab shows is prepared for referring at
    once (the page calls prepare_if_open after every load); with another tab open, it is not."""
    import threading

    from core.sam.segmenter import image_key

    calls, called = [], threading.Event()

    def analysed(image, settings, sam=None):
        calls.append(image_key(image))
        called.set()

    monkeypatch.setattr(cb.ws.engine, "grounding_candidates", analysed)
    session = Session()
    session.open_tab = "search"
    cb.segment.load_all(session, _fresh_image(tmp_path / "s.png", 101), "s.png")
    assert cb.refer.prepare_if_open(session) == "" and not calls
    session.open_tab = "refer"
    cb.segment.load_all(session, _fresh_image(tmp_path / "r.png", 102), "r.png")
    assert cb.refer.prepare_if_open(session).startswith("Preparing")
    assert called.wait(10) and calls == [session.image_key]


def test_counts_read_as_english():
    """Issue 26 #9: "1 automatic mask", not "1 automatic masks"."""
    from demo.outputs import plural

    assert plural(1, "automatic mask") == "1 automatic mask"
    assert plural(0, "candidate") == "0 candidates" and plural(3, "candidate") == "3 candidates"
