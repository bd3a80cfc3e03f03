"""The Gradio Blocks UI: widgets, their wiring to `demo.callbacks`, error handling.

Everything a person does lives in a per-session `gr.State(Session())`; the models are
shared through the one `AppContext`. Every callback is wrapped by `guard`: an exception
becomes a warning toast plus a line in the status bar, the outputs stay as they were,
and the session stays usable.
"""
from __future__ import annotations

import functools
import json
import sys
import traceback
from typing import Callable

import gradio as gr

from core.views import VIEWS
from demo.callbacks import Callbacks
from demo.context import AppContext, ModelsUnavailable
from demo.state import CLICK_MODES, Session, UserError

TITLE = "Find and select objects: SAM + CLIP"
INTRO = (f"# {TITLE}\n"
         "Click an object to segment it with **SAM**, compare its **mask** and **crop** views "
         "(and more) with their nearest neighbours under **CLIP**, search a gallery of objects, "
         "or refer to an object in words (\"the cat on the left\").")
CSS = """
#status { min-height: 2.2em; }
.cols3 .grid-container { grid-template-columns: repeat(3, minmax(0, 1fr)) !important; }
.cols4 .grid-container { grid-template-columns: repeat(4, minmax(0, 1fr)) !important; }
#banner { border-left: 4px solid #e8a33d; padding-left: .6em; }
"""
EXAMPLE_QUERIES_FILE = "queries.json"


def error_message(exc: BaseException) -> str:
    """A person-readable sentence for an exception (never a stack trace)."""
    if isinstance(exc, (UserError, ModelsUnavailable)):
        return str(exc)
    if isinstance(exc, (ValueError, FileNotFoundError)) and str(exc):
        return str(exc)[:600]
    if type(exc).__name__ == "WeightsNotFound":
        return str(exc)
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return (f"Something went wrong ({type(exc).__name__}{': ' + text if text else ''}). "
            "The details are in the server log; the session is still usable.")


def guard(fn: Callable, status: gr.components.Component) -> Callable:
    """Wrap a callback so any exception becomes a warning toast and a status line."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # every failure is shown, none escapes as a stack trace
            if not isinstance(exc, (UserError, ModelsUnavailable)):
                traceback.print_exc(file=sys.stderr)
            message = error_message(exc)
            gr.Warning(message)
            return {status: f"⚠️ {message}"}
    return wrapper


def _example_queries(ctx: AppContext) -> dict:
    path = ctx.settings.examples_dir / EXAMPLE_QUERIES_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"search": [], "refer": []}


def build_demo(ctx: AppContext, gpu: Callable | None = None) -> gr.Blocks:
    """The whole app as a `gr.Blocks` (not launched).

    `gpu` decorates the callbacks that run models (e.g. `spaces.GPU` on a ZeroGPU Space)."""
    cb = Callbacks(ctx)

    def heavy(fn: Callable) -> Callable:
        return guard(gpu(fn) if gpu else fn, status)

    examples = cb.example_paths()
    queries = _example_queries(ctx)
    gallery_views = list(ctx.settings.gallery_views)

    with gr.Blocks(title=TITLE) as demo:
        session = gr.State(Session())
        gr.Markdown(INTRO)
        with gr.Row():
            banner = gr.Markdown(ctx.banner(), elem_id="banner")
            untrained_btn = gr.Button("Use untrained models", variant="secondary", scale=0,
                                      visible=False, elem_id="use-untrained")
        status = gr.Markdown("", elem_id="status")
        timer = gr.Timer(1.5, active=True)

        # ------------------------------------------------------------ Segment
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=280):
                upload = gr.Image(type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                  label="Upload an image", height=180, elem_id="upload")
                example_gallery = gr.Gallery(
                    value=[(str(p), p.stem) for p in examples], label="...or pick an example",
                    columns=4, height=130, allow_preview=False, object_fit="cover",
                    elem_id="examples")
                mode = gr.Radio(list(CLICK_MODES), value=next(iter(CLICK_MODES)),
                                label="Click mode", elem_id="mode")
                with gr.Row():
                    undo_btn = gr.Button("Undo last", size="sm", elem_id="undo")
                    clear_btn = gr.Button("Clear all", size="sm", elem_id="clear")
                    everything_btn = gr.Button("Everything", size="sm", elem_id="everything")
                candidates = gr.Gallery(label="Candidate masks (select one)", columns=3, height=150,
                                        allow_preview=False, object_fit="contain",
                                        elem_id="candidates", elem_classes=["cols3"])
                with gr.Row():
                    png_btn = gr.DownloadButton("Mask PNG", value=None, size="sm", elem_id="dl-png")
                    rle_btn = gr.DownloadButton("Mask RLE JSON", value=None, size="sm", elem_id="dl-rle")
            with gr.Column(scale=2):
                canvas = gr.Image(label="Image: click to segment", interactive=False, format="png",
                                  buttons=["fullscreen"], elem_id="canvas")
                info = gr.Markdown("No image yet: upload one or pick an example.", elem_id="info")

        seg_outputs = [session, canvas, candidates, info, png_btn, rle_btn, status]

        # ------------------------------------------------------------ Tabs
        with gr.Tabs():
            with gr.Tab("Compare views", id="compare"):
                gr.Markdown("The selected object in every view the engine offers, each with its "
                            "nearest objects in the gallery under CLIP (the paper compared "
                            "**mask** and **crop**).")
                compare_btn = gr.Button("Compare views of the selected object", variant="primary",
                                        elem_id="compare-btn")
                view_images, view_neighbours = [], []
                names = list(VIEWS)
                for row_start in range(0, len(names), 3):
                    with gr.Row(equal_height=False):
                        for name in names[row_start:row_start + 3]:
                            with gr.Column(min_width=220):
                                view_images.append(gr.Image(
                                    label=f"{name}: {VIEWS[name].description}", interactive=False,
                                    height=180, buttons=[], elem_id=f"view-{name}"))
                                view_neighbours.append(gr.Gallery(
                                    label=f"nearest objects ({name})", columns=4, height=110,
                                    allow_preview=False, elem_id=f"nn-{name}",
                                    elem_classes=["cols4"]))

            with gr.Tab("Search", id="search"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=260):
                        query_source = gr.Radio(["selected object", "text"], value="selected object",
                                                label="Query with", elem_id="query-source")
                        query_text = gr.Textbox(label="Text query", placeholder="a cat",
                                                elem_id="query-text")
                        if queries.get("search"):
                            gr.Examples([[q] for q in queries["search"]], inputs=[query_text],
                                        label="Example texts")
                        search_view = gr.Radio(gallery_views, value="crop" if "crop" in gallery_views
                                               else gallery_views[0], label="View", elem_id="search-view")
                        metric = gr.Radio(["cosine", "l2"], value="cosine", label="Metric",
                                          elem_id="metric")
                        top_k = gr.Slider(1, 30, value=8, step=1, label="Results", elem_id="top-k")
                        include_mine = gr.Checkbox(True, label="Include my gallery additions",
                                                   elem_id="include-mine")
                        search_btn = gr.Button("Search", variant="primary", elem_id="search-btn")
                        gallery_info = gr.Markdown(ctx.gallery_status(), elem_id="gallery-info")
                        my_info = gr.Markdown("Your gallery is empty.", elem_id="my-gallery")
                        with gr.Row():
                            add_sel_btn = gr.Button("Add selected object", size="sm", elem_id="add-selected")
                            add_all_btn = gr.Button("Add all objects of my image", size="sm",
                                                    elem_id="add-all")
                    with gr.Column(scale=2):
                        results = gr.Gallery(label="Results", columns=4, height=420,
                                             allow_preview=False, elem_id="results",
                                             elem_classes=["cols4"])
                        hit_image = gr.Image(label="Source of the selected result", interactive=False,
                                             height=320, buttons=[], elem_id="hit-image")
                        hit_info = gr.Markdown("", elem_id="hit-info")

            with gr.Tab("Refer", id="refer"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=260):
                        refer_text = gr.Textbox(label="Referring expression",
                                                placeholder="the cat on the left", elem_id="refer-text")
                        refer_btn = gr.Button("Find it", variant="primary", elem_id="refer-btn")
                        if queries.get("refer"):
                            gr.Examples([[q["text"]] for q in queries["refer"]], inputs=[refer_text],
                                        label="Example expressions (pick the matching example image)")
                        parsed = gr.Markdown("", elem_id="refer-parsed")
                        refer_candidates = gr.Gallery(label="Top candidates", columns=4, height=200,
                                                      allow_preview=False, elem_id="refer-candidates",
                                                      elem_classes=["cols4"])
                    with gr.Column(scale=2):
                        refer_image = gr.Image(label="Chosen object", interactive=False, buttons=[],
                                               elem_id="refer-image")

        # ------------------------------------------------------------ wiring
        def on_example(sess: Session, evt: gr.SelectData, progress=gr.Progress()):
            return cb.load_example(sess, evt.index, _progress(progress))

        def on_upload(sess: Session, path, progress=gr.Progress()):
            return cb.load_upload(sess, path, _progress(progress))

        def on_click(sess: Session, mode_label: str, evt: gr.SelectData):
            return cb.click(sess, mode_label, evt.index)

        def on_candidate(sess: Session, evt: gr.SelectData):
            return cb.choose_candidate(sess, evt.index)

        def on_everything(sess: Session, progress=gr.Progress()):
            out = cb.everything(sess, _progress(progress))
            pick = list(CLICK_MODES)[3]
            return (*out, pick if sess.auto is not None and len(sess.auto.masks) else gr.skip())

        def on_compare(sess: Session, progress=gr.Progress()):
            sess, views, tiles, message = cb.compare(sess, _progress(progress))
            return (sess, *views, *tiles, message)

        def on_search(sess, source, text, view, metric_name, k, mine, progress=gr.Progress()):
            return cb.search(sess, source, text, view, metric_name, k, mine, _progress(progress))

        def on_hit(sess: Session, evt: gr.SelectData):
            return cb.show_hit(sess, evt.index)

        def on_add_selected(sess: Session, progress=gr.Progress()):
            return cb.add_selected(sess, _progress(progress))

        def on_add_all(sess: Session, progress=gr.Progress()):
            return cb.add_all(sess, _progress(progress))

        def on_parse(text: str):
            return cb.parse_expression(text), "Parsed; grounding it in the image..."

        def on_refer(sess: Session, text: str, progress=gr.Progress()):
            if not text or not text.strip():
                return tuple(gr.skip() for _ in range(6))   # on_parse already said why
            sess, tiles, picture, message = cb.refer(sess, text, _progress(progress))
            return (sess, tiles, picture, cb.render_canvas(sess), cb.selection_info(sess), message)

        def on_tick():
            done = ctx.loaded.is_set() and (ctx.load_error or ctx.gallery_set.ready
                                            or ctx.gallery_set.error)
            return (ctx.banner(), gr.Button(visible=bool(ctx.load_error)), ctx.gallery_status(),
                    gr.Timer(active=not done))

        def on_untrained():
            ctx.use_untrained()
            return (ctx.banner(), gr.Button(visible=False), gr.Timer(active=True),
                    "Switching to untrained models (random weights) for everybody on this server...")

        example_gallery.select(heavy(on_example), [session], seg_outputs)
        upload.upload(heavy(on_upload), [session, upload], seg_outputs)
        canvas.select(heavy(on_click), [session, mode], seg_outputs)
        candidates.select(guard(on_candidate, status), [session], seg_outputs)
        undo_btn.click(heavy(cb.undo), [session], seg_outputs)
        clear_btn.click(guard(cb.clear, status), [session], seg_outputs)
        everything_btn.click(heavy(on_everything), [session], seg_outputs + [mode])
        compare_btn.click(heavy(on_compare), [session],
                          [session, *view_images, *view_neighbours, status])
        search_btn.click(heavy(on_search),
                         [session, query_source, query_text, search_view, metric, top_k, include_mine],
                         [session, results, status])
        query_text.submit(lambda: "text", None, query_source).then(
            heavy(on_search),
            [session, query_source, query_text, search_view, metric, top_k, include_mine],
            [session, results, status])
        results.select(guard(on_hit, status), [session], [hit_image, hit_info])
        add_sel_btn.click(heavy(on_add_selected), [session], [session, my_info, status])
        add_all_btn.click(heavy(on_add_all), [session], [session, my_info, status])
        refer_outputs = [session, refer_candidates, refer_image, canvas, info, status]
        for trigger in (refer_btn.click, refer_text.submit):
            trigger(guard(on_parse, status), [refer_text], [parsed, status]).then(
                heavy(on_refer), [session, refer_text], refer_outputs)
        timer.tick(on_tick, None, [banner, untrained_btn, gallery_info, timer])
        untrained_btn.click(on_untrained, None, [banner, untrained_btn, timer, status])
        demo.load(on_tick, None, [banner, untrained_btn, gallery_info, timer])
    return demo


def _progress(progress: gr.Progress) -> Callable[[float, str], None]:
    """Adapt gr.Progress to the callbacks' progress(fraction, note)."""
    def report(fraction: float, note: str) -> None:
        try:
            progress(min(max(float(fraction), 0.0), 1.0), desc=note)
        except Exception:  # progress is cosmetic; never let it break a callback
            pass
    return report
