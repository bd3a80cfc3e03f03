"""The Blocks layout, the error guard, app.py's options, the import rules, the renderers."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.engine import EngineSettings
from demo.context import AppContext, AppSettings
from demo.state import UserError

REPO = Path(__file__).resolve().parents[1]


def test_demo_imports_no_heavy_libraries():
    """demo/ (and app.py's start-up path) never import torch, faiss, spaCy, open_clip or SAM."""
    code = ("import sys, demo.shell, demo.callbacks, demo.context, demo.rendering, demo.state, app\n"
            "heavy = [m for m in ('torch', 'faiss', 'spacy', 'open_clip', 'segment_anything') "
            "if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"heavy modules imported: {out.stdout.strip()}"


def test_demo_source_has_no_heavy_imports():
    for path in (REPO / "demo").rglob("*.py"):
        text = path.read_text()
        for name in ("torch", "faiss", "spacy", "open_clip", "segment_anything"):
            assert f"import {name}" not in text and f"from {name}" not in text, (path.name, name)


def test_build_demo_has_the_widgets_the_tests_and_people_use(tmp_path):
    import gradio as gr

    from demo.shell import build_demo

    ctx = AppContext(EngineSettings(sam="vit_tiny", untrained=True, device="cpu"),
                     AppSettings(cache_dir=tmp_path, gallery_views=("mask", "crop")))
    demo = build_demo(ctx)
    assert isinstance(demo, gr.Blocks)
    ids = {getattr(block, "elem_id", None) for block in demo.blocks.values()}
    for wanted in ("canvas", "examples", "dl-cutout", "dl-png", "dl-rle", "dl-coco", "export-note",
                   "compare-btn", "view-mask", "view-crop", "nn-crop", "search-btn", "results",
                   "metric", "search-view", "add-selected", "refer-text", "refer-btn", "refer-parsed",
                   "refer-candidates", "hit-canvas", "status", "info", "banner", "use-untrained"):
        assert wanted in ids, wanted
    canvas = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "canvas")
    assert isinstance(canvas, gr.HTML) and [f.__name__ for f in canvas.server_fns] == ["preview"]
    # the canvas's events are wired: each trigger of the page has a listener
    names = {t[1] for dep in demo.fns.values() for t in dep.targets if t[0] == canvas._id}
    assert {"prompts", "pick", "everything", "upload"} <= names, names
    states = [b for b in demo.blocks.values() if isinstance(b, gr.State)]
    assert len(states) == 1                          # all per-user state in one Session


def test_guard_turns_exceptions_into_a_status_message(capsys):
    import gradio as gr

    from demo.errors import error_message, guard

    with gr.Blocks():
        status = gr.Markdown()

    def fails_for_the_user():
        raise UserError("No image yet: upload one.")

    def fails_inside():
        raise KeyError("boom")

    def works(x):
        return x + 1

    assert guard(works, status)(1) == 2
    out = guard(fails_for_the_user, status)()
    assert out == {status: "⚠️ No image yet: upload one."}
    out = guard(fails_inside, status)()
    message = out[status]
    assert "Something went wrong (KeyError" in message and "Traceback" not in message
    assert "Traceback" in capsys.readouterr().err     # the details go to the server log
    assert error_message(ValueError("the image file is damaged")) == "the image file is damaged"


def test_app_options(monkeypatch):
    import app

    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    args = app.parse_args(["--untrained", "--gallery-views", "mask,crop"])
    assert args.port == 7999 and args.host == "0.0.0.0" and args.gallery_views == ("mask", "crop")
    assert app.parse_args(["--port", "1234"]).port == 1234
    with pytest.raises(SystemExit):
        app.parse_args(["--gallery-views", "mask,sideways"])


def test_rendering_overlays_and_prompts():
    from demo import rendering

    image = np.full((40, 60, 3), 100, np.uint8)
    mask = np.zeros((40, 60), bool)
    mask[10:30, 20:40] = True
    over = rendering.overlay_mask(image, mask)
    assert over.shape == image.shape and over.dtype == np.uint8
    assert (over[0, 0] == 100).all()                        # background untouched
    assert over[20, 30, 2] > over[20, 30, 0]                # object tinted blue
    edge = rendering.mask_boundary(mask)
    assert edge[10, 25] and not edge[20, 30] and edge.sum() == 2 * 20 + 2 * 18
    out = rendering.outline_mask(image, mask)
    assert out[0, 0, 0] < 100 and (out[20, 30] == 100).all()
    many = rendering.overlay_masks(image, np.stack([mask, ~mask]), highlight=0)
    assert not np.array_equal(many[20, 30], many[0, 0])
    drawn = rendering.draw_prompts(image, [(5, 5), (50, 30)], [1, 0], box=(20, 10, 40, 30), corner=(3, 30))
    assert tuple(drawn[5, 5]) == rendering.POSITIVE_COLOR
    assert tuple(drawn[30, 50]) != (100, 100, 100)
    assert rendering.thumbnail(np.zeros((400, 100, 3), np.uint8), 100).shape == (100, 25, 3)
    with pytest.raises(ValueError, match="does not match"):
        rendering.overlay_mask(image, mask[:10])
    with pytest.raises(ValueError, match="uint8 RGB"):
        rendering.overlay_mask(image.astype(np.float32), mask)
    assert len({tuple(c) for c in rendering.palette(12)}) == 12


def test_canvas_javascript_triggers_the_events_layout_wires():
    from demo import canvas

    for event in canvas.EVENTS:
        assert f"trigger('{event}'" in canvas.JS, event
    assert "server.preview(" in canvas.JS and "watch('value'" in canvas.JS


def test_an_empty_expression_clears_what_was_understood(tmp_path):
    from demo.shell import build_demo

    ctx = AppContext(EngineSettings(sam="vit_tiny", untrained=True, device="cpu"),
                     AppSettings(cache_dir=tmp_path, gallery_views=("crop",)))
    demo = build_demo(ctx)
    parse = next(fn for fn in demo.fns.values() if getattr(fn.fn, "__name__", "") == "on_parse")
    with pytest.warns(UserWarning):
        parsed, status = parse.fn("   ")
    assert parsed == "" and "Type a referring expression" in status


def test_an_upload_clears_the_examples_selection(tmp_path):
    """Bug 10: the example thumbnail is no longer highlighted once a file is uploaded."""
    import gradio as gr

    from demo.shell import build_demo

    ctx = AppContext(EngineSettings(sam="vit_tiny", untrained=True, device="cpu"),
                     AppSettings(cache_dir=tmp_path, gallery_views=("crop",)))
    demo = build_demo(ctx)
    examples = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "examples")
    upload = next(fn for fn in demo.fns.values() if getattr(fn.fn, "__name__", "") == "on_upload")
    assert examples in upload.outputs
    assert gr.Gallery(selected_index=None).selected_index is None


def test_the_canvas_offers_redo_and_keeps_busy_text_readable():
    from demo import canvas

    assert "sc-redo" in canvas.TEMPLATE and "Ctrl+Shift+Z" in canvas.TEMPLATE
    assert "function redo()" in canvas.JS and "k === 'y'" in canvas.JS
    assert ".sc-busy .sc-busy-text { color: #fff" in canvas.CSS


def test_every_guarded_event_can_show_its_failure_in_the_status_line(tmp_path):
    """The guard answers a failure with {status: message}: each guarded event must list the
    status line among its outputs, or the message is lost (and Gradio logs an error)."""
    from demo.shell import build_demo

    ctx = AppContext(EngineSettings(sam="vit_tiny", untrained=True, device="cpu"),
                     AppSettings(cache_dir=tmp_path, gallery_views=("crop",)))
    demo = build_demo(ctx)
    status = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "status")
    guarded = [fn for fn in demo.fns.values() if hasattr(fn.fn, "__wrapped__") and fn.api_visibility == "private"]
    assert len(guarded) >= 15
    missing = [fn.name for fn in guarded if status not in fn.outputs]
    assert not missing, f"guarded events without the status line among their outputs: {missing}"
