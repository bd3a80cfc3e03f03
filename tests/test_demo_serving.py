"""Serving many people: per-session SAM choice, session end frees state and files (never
another session's), orphaned session folders are swept, text limits, the untrained switch
cannot be flipped from outside, events are not API endpoints, bounded decoding of big uploads."""
from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import config
from core.engine import EngineSettings
from demo import maskdata
from demo import settings as serving
from demo.callbacks import Callbacks
from demo.context import AppContext, AppSettings, sweep_old_files
from demo.state import Session, Stale, UserError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> AppContext:
    folder = tmp_path_factory.mktemp("examples")
    pil = Image.open(REPO / "examples" / "chelsea_cat.jpg")
    pil.thumbnail((160, 160))
    pil.save(folder / "cat.jpg")
    settings = AppSettings(examples_dir=folder, gallery_views=("crop",), gallery_max_objects=2,
                           cache_dir=tmp_path_factory.mktemp("cache"), display_max_side=120,
                           work_max_side=200, sam_choices=("vit_tiny", "vit_t"))
    context = AppContext(EngineSettings(sam="vit_tiny", untrained=True, device="cpu"), settings)
    assert context.load_models(), context.load_error
    return context


@pytest.fixture()
def cb(ctx) -> Callbacks:
    return Callbacks(ctx)


def test_model_choice_is_per_session_and_models_are_shared(cb, ctx):
    a, b = Session(), Session()
    cb.segment.load_example(a, 0)
    cb.segment.load_example(b, 0)
    out = cb.segment.set_model(b, "fast (MobileSAM)")            # the label works too
    assert b.sam_model == "vit_t" and a.sam_model == ""
    assert json.loads(out.canvas)["phase"] == "encoding" and json.loads(out.canvas)["model"] == "vit_t"
    cb.segment.finish_load(b, b.image_key)
    assert cb.ws.segmenter(b) is ctx.engine.segmenter_for("vit_t")
    assert cb.ws.segmenter(a) is ctx.engine.segmenter and cb.ws.segmenter(a) is not cb.ws.segmenter(b)
    assert ctx.encode_measured("vit_t") is not None
    assert "vit_t" in ctx.model_line("vit_t") and "on this machine" in ctx.model_line("vit_t")
    # the fast path answers with the session's model (the canvas sends it)
    h, w = b.image.shape[:2]
    r = cb.segment.preview({"key": b.image_key, "model": "vit_t", "points": [[w / 2, h / 2, 1]]})
    assert r["ok"], r
    with pytest.raises(UserError, match="Unknown SAM"):
        cb.segment.set_model(a, "vit_h_not_offered")
    with pytest.raises(Stale):
        cb.segment.set_model(b, "vit_t")
    # the session holds the key of its embedding, never the tensor
    assert isinstance(b.embedding, str)


def test_session_end_frees_state_and_files(cb, ctx, tmp_path):
    cb.files.upload_dirs = [str(tmp_path)]
    upload = tmp_path / "abc" / "mine.png"
    upload.parent.mkdir()
    Image.fromarray(np.full((50, 60, 3), 90, np.uint8)).save(upload)
    session = Session()
    cb.files.register(session, "hash1")
    cb.segment.load_all(session, str(upload), "mine.png")
    h, w = session.image.shape[:2]
    cb.segment.commit_prompts(session, {"key": session.image_key, "points": [[w / 2, h / 2, 1]], "version": 1})
    cb.segment.exports(session)
    folder = Path(session.files_dir)
    assert any(folder.iterdir())
    picture = ctx.display_dir / f"{session.image_key}.jpg"
    assert picture.exists()
    cb.files.end_session_of("hash1")
    assert not folder.exists() and not upload.exists() and not picture.exists()
    assert session.image is None and cb.files.live_sessions() == 0
    cb.files.end_session(session)                               # twice is fine


def _upload(folder: Path, name: str = "mine.png", value: int = 90) -> Path:
    """A picture stored as Gradio stores uploads: <upload folder>/<hash>/<name>."""
    path = folder / f"h{value}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((50, 60, 3), value, np.uint8)).save(path)
    return path


def _click(cb, session):
    """A click committed, and its downloads written (as the page's chained event does)."""
    h, w = session.image.shape[:2]
    out = cb.segment.commit_prompts(session, {"key": session.image_key, "points": [[w / 2, h / 2, 1]],
                                              "version": 1})
    cb.segment.exports(session)
    return out


def test_ending_one_session_keeps_what_another_still_holds(cb, ctx, tmp_path):
    """Uploads and canvas pictures are named by content: two people may hold the same one."""
    cb.files.upload_dirs = [str(tmp_path)]
    upload = _upload(tmp_path)
    a, b = Session(), Session()
    for session in (a, b):
        cb.segment.load_all(session, str(upload), "mine.png")
        _click(cb, session)
    picture, b_files = ctx.display_path(b.image_key), Path(b.files_dir)
    cb.files.end_session(a)
    cb.files.end_session(a)                                     # twice is fine
    assert upload.exists() and picture.exists() and any(b_files.iterdir())
    assert b.image is not None and str(upload) in cb.files.in_use()
    cb.files.end_session(b)
    assert not upload.exists() and not picture.exists() and not b_files.exists()


def test_orphaned_session_folders_are_swept_live_ones_kept(cb, ctx, tmp_path, monkeypatch):
    monkeypatch.setattr(ctx, "files_root", tmp_path / "sessions")
    live, dropped, ended = Session(), Session(), Session()
    live_dir, dropped_dir, ended_dir = (cb.files.files_dir(s) for s in (live, dropped, ended))
    assert live_dir.parent == ctx.files_root and live_dir != dropped_dir
    stray = ctx.files_root / "session_from_nowhere"
    stray.mkdir()
    cb.files.end_session(ended)
    del dropped                                           # Gradio let go of it without ending it
    gc.collect()
    assert cb.files.sweep_session_folders() == 2
    assert live_dir.is_dir() and not dropped_dir.exists() and not stray.exists()
    assert not ended_dir.exists() and cb.files.files_dir(live) == live_dir
    assert cb.files.sweep_session_folders() == 0


def test_cache_sweep_never_deletes_a_live_sessions_files(cb, ctx, tmp_path):
    cb.files.upload_dirs = [str(tmp_path)]
    upload, stale = _upload(tmp_path, value=40), _upload(tmp_path, "old.png", value=41)
    session = Session()
    cb.segment.load_all(session, str(upload), "mine.png")
    picture = ctx.display_path(session.image_key)
    sweep_old_files([str(tmp_path), str(ctx.display_dir)], -60, cb.files.in_use())   # all count as old
    assert upload.exists() and picture.exists() and not stale.exists()
    cb.files.end_session(session)
    assert not upload.exists() and not picture.exists()


def test_an_upload_the_app_cannot_read_is_deleted(cb, tmp_path):
    cb.files.upload_dirs = [str(tmp_path)]
    bad = tmp_path / "h1" / "noise.png"
    bad.parent.mkdir()
    bad.write_bytes(b"not a picture")
    with pytest.raises(UserError):
        cb.segment.begin_load(Session(), str(bad), "noise.png")
    assert not bad.exists()


def test_closing_a_page_deletes_files_its_first_click_made(ctx):
    """The page's unload ends its session even when no upload registered it (here its first
    event with files is a click), and downloads are served in place: no copy outlives it."""
    import gradio as gr

    from demo.shell import build_demo

    demo = build_demo(ctx)
    session = Session()
    Callbacks(ctx).segment.load_example(session, 0)
    prompts = next(fn for fn in demo.fns.values() if any(t[1] == "prompts" for t in fn.targets))
    unload = next(fn for fn in demo.fns.values() if any(t[1] == "unload" for t in fn.targets))
    h, w = session.image.shape[:2]
    payload = {"key": session.image_key, "points": [[w / 2, h / 2, 1]], "version": 1}
    out = prompts.fn(session, gr.EventData(None, payload), gr.Request(session_hash="page1"))
    assert out[0] is session and "Mask updated" in out[3]
    exports = next(fn for fn in demo.fns.values() if getattr(fn.fn, "__name__", "") == "on_exports")
    exports.fn(session, gr.Request(session_hash="page1"))   # chained after the commit
    folder = Path(session.files_dir)
    cutout = folder / "cat_cutout.png"
    assert cutout.exists() and gr.utils.is_static_file(str(cutout))
    unload.fn(gr.Request(session_hash="page1"))
    assert not folder.exists() and session.image is None


def test_text_limits(cb):
    session = Session()
    long = "a" * (serving.MAX_TEXT_CHARS + 1)
    with pytest.raises(UserError, match="limit"):
        cb.search.search(session, "text", long, "crop", "cosine", 4, True)
    with pytest.raises(UserError, match="limit"):
        cb.refer.parse_expression(long)


def test_untrained_switch_refused_while_models_work(ctx):
    assert ctx.use_untrained() is None


def test_events_are_not_api_endpoints(ctx):
    """Only the deliberate public API (demo/api.py) is an endpoint, each in the concurrency
    group of the page's work of that kind; every UI event stays private."""
    from demo.api import ENDPOINTS
    from demo.shell import build_demo

    demo = build_demo(ctx)
    info = demo.get_api_info()
    assert set(info["named_endpoints"]) == {f"/{name}" for name in ENDPOINTS}
    assert not info.get("unnamed_endpoints")
    public = {fn.api_name: fn for fn in demo.fns.values() if fn.api_visibility != "private"}
    assert set(public) == set(ENDPOINTS)
    for name, group in ENDPOINTS.items():
        assert public[name].concurrency_id == group
    assert ENDPOINTS["segment"] == "click" and ENDPOINTS["search"] == "clip"
    groups = {fn.concurrency_id for fn in demo.fns.values()}
    assert {"click", "encoder", "everything", "clip"} <= groups
    encoder = [fn for fn in demo.fns.values() if fn.concurrency_id == "encoder"]
    assert all(fn.concurrency_limit == 1 for fn in encoder)


def test_big_upload_is_checked_before_decoding_and_shrunk(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((3000, 4000, 3), np.uint8)).save(path)
    monkeypatch.setattr(config, "MAX_IMAGE_PIXELS", 10_000_000)
    with pytest.raises(UserError, match="megapixels"):
        maskdata.open_upload(path, "big.png")
    monkeypatch.setattr(config, "MAX_IMAGE_PIXELS", 20_000_000)
    opened = maskdata.open_upload(path, "big.png", work_max_side=1024)
    assert max(opened.image.shape[:2]) == 1024 and opened.original_size == (3000, 4000)


def test_points_per_side_setting_reaches_the_automatic_masks(ctx, monkeypatch):
    assert ctx.automask_settings().points_per_side == 4           # untrained default
    monkeypatch.setattr(serving, "POINTS_PER_SIDE", 16)
    settings = ctx.automask_settings()
    assert settings.points_per_side == 16 and settings.max_masks == 16   # the rest unchanged


def test_the_model_line_says_which_precision_runs(ctx):
    ctx.engine.segmenter  # loaded
    assert ctx.engine.precision() and f"precision {ctx.engine.precision()}" in ctx.model_line()
    assert ctx.engine.precision("not_loaded") == ""


def test_downloads_for_a_session_whose_folder_is_gone_are_dropped(cb, ctx, tmp_path):
    """A page closed right after a click: its folder is removed while the downloads are
    being written; the write is dropped (Stale), with no traceback in the log."""
    session = Session()
    cb.segment.load_example(session, 0)
    _click(cb, session)
    gone = tmp_path / "gone"
    session.files_dir, session.exported = str(gone), None
    with pytest.raises(Stale):
        cb.segment.exports(session)
    assert not gone.exists()


def test_the_banner_names_the_default_and_the_status_the_sessions_model(cb, ctx):
    """Bug 10: the banner is shared, so it says 'default SAM ...'; a session that switched
    hears about its own model in the status line once its image is encoded again."""
    assert f"default SAM {ctx.engine.settings.sam}" in ctx.banner()
    session = Session()
    cb.segment.load_example(session, 0)
    out = cb.segment.set_model(session, "vit_t")
    assert "Now using SAM vit_t" in out.status
    if session.embedding is None:
        out = cb.segment.finish_load(session, session.image_key)
        assert "Your session uses SAM vit_t" in out.status


def test_heavy_requests_give_memory_back_only_above_the_limit(monkeypatch):
    """After a heavy request the heap is trimmed when the process is over TRIM_ABOVE_MB (the
    8-user load test's peak stays under 3 GB), and not at all below it or with 0."""
    from demo import context, wiring

    assert context.resident_bytes() > 10 * 1024 * 1024
    calls = []
    monkeypatch.setattr(context, "release_memory", lambda: calls.append(1))
    assert context.release_memory_above(0) is False and context.release_memory_above(1 << 50) is False
    assert context.release_memory_above(1) is True and calls == [1]

    trims = []
    monkeypatch.setattr(wiring, "release_memory_above", lambda limit: trims.append(limit))
    monkeypatch.setattr(wiring.serving, "TRIM_ABOVE_MB", 7)

    def work(x):
        return x * 2

    def steps(n):
        yield from range(n)

    assert wiring.trimmed(work)(3) == 6 and trims == [7 * 1024 * 1024]
    assert list(wiring.trimmed(steps)(3)) == [0, 1, 2] and len(trims) == 2
    with pytest.raises(ZeroDivisionError):
        wiring.trimmed(lambda: 1 / 0)()
    assert len(trims) == 3   # also after a failure


@pytest.mark.parametrize("value, default, expected", [
    ("", True, True), ("", False, False), ("1", False, True), ("ON", False, True), ("yes", False, True),
    ("0", True, False), ("Off", True, False), ("no", True, False), ("maybe", True, True), ("maybe", False, False)])
def test_yes_no_settings(monkeypatch, value, default, expected):
    """SAMCLIP_MCP (default no) and SAMCLIP_EVERYTHING_PARTIALS (default yes) read the same way."""
    from core.config import env_flag

    monkeypatch.setenv("SAMCLIP_TEST_FLAG", value)
    assert env_flag("SAMCLIP_TEST_FLAG", default) is expected


def test_canvas_pictures_written_twice_at_once_or_pruned_meanwhile_raise_nothing(tmp_path, monkeypatch):
    """Issue 26 #9: images switched fast logged a FileNotFoundError traceback. Two requests for
    one canvas picture at once shared one temporary name (the second found it moved away), and
    the prune read the age of a picture another request had just deleted."""

    context = AppContext(EngineSettings(sam="vit_tiny", untrained=True, device="cpu"),
                         AppSettings(examples_dir=tmp_path, cache_dir=tmp_path / "cache"))
    image = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    real_replace, nested = Path.replace, []

    def replace_after_another_request(self, target):     # the other request runs just before the move
        if not nested:
            nested.append("started")
            nested.append(context.display_url("k1", image, 32))
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", replace_after_another_request)
    assert context.display_url("k1", image, 32) == nested[1]
    monkeypatch.setattr(Path, "replace", real_replace)
    assert Image.open(context.display_path("k1")).size == (32, 21)
    assert not list(context.display_dir.glob("*.tmp"))
    real_glob = Path.glob
    monkeypatch.setattr(Path, "glob", lambda self, pattern: [*real_glob(self, pattern), self / "gone.jpg"])
    assert context.prune_display_files() == 0             # a picture deleted meanwhile is skipped
    context.forget_display("k1")                          # released, then shown again: written again
    monkeypatch.setattr(Path, "glob", real_glob)
    context.display_url("k1", image, 32)
    assert context.display_path("k1").stat().st_size > 0
