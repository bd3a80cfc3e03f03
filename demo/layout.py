"""The Gradio Blocks UI: widgets, their wiring to `demo.callbacks`, error handling.

Everything a person does lives in a per-session `gr.State(Session())`; the models are
shared through the one `AppContext`. The Segment area is one browser canvas
(`demo.canvas`), the status and info lines right under it (so on a phone they come right
after it), examples and downloads beside it. Every callback is wrapped by `guard`: an
exception becomes a warning toast plus a line in the status bar (and a notice on the
canvas), the outputs stay as they were, and the session stays usable; a result for an
image that is no longer current (`Stale`) is dropped silently.
"""
from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Callable

import gradio as gr

from core.engine import sam_label
from core.views import VIEWS
from demo import settings as serving
from demo.callbacks import Callbacks, PageOut, SegmentOut
from demo.canvas import mask_canvas
from demo.context import TITLE, AppContext
from demo.errors import error_message, guard
from demo.state import Session

INTRO = (f"# {TITLE}\n"
         "<span class='intro-more'>Click an object to segment it with **SAM**, compare its **mask** and "
         "**crop** views (and more) with their nearest neighbours under **CLIP**, search a gallery of "
         "objects, or refer to an object in words (\"the cat on the left\").</span>")
CSS = """
#status { min-height: 1.6em; }
#status p, #info p { margin: 2px 0; }
.cols3 .grid-container { grid-template-columns: repeat(3, minmax(0, 1fr)) !important; }
.cols4 .grid-container { grid-template-columns: repeat(4, minmax(0, 1fr)) !important; }
#banner { border-left: 4px solid #e8a33d; padding-left: .6em; }
/* gallery captions wrap instead of being cut */
.caption-label { white-space: normal !important; overflow: visible !important; text-overflow: clip !important;
  line-height: 1.2; font-size: 12px; }
#downloads button { font-size: 13px; }
@media (max-width: 700px) {
  .intro-more { display: none; }
  #header h1 { font-size: 1.25em; margin: 0; }
  #banner { font-size: 12px; }
}
"""
EXAMPLE_QUERIES_FILE = "queries.json"
DOWNLOADS = (("dl-cutout", "Cut-out PNG", "cutout"), ("dl-png", "Mask PNG", "mask_png"),
             ("dl-rle", "Mask COCO RLE", "mask_rle"), ("dl-coco", "All objects COCO JSON", "coco"))


def _example_queries(ctx: AppContext) -> dict:
    path = ctx.settings.examples_dir / EXAMPLE_QUERIES_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"search": [], "refer": []}


def _event_data(evt) -> dict:
    data = getattr(evt, "_data", None)
    return data if isinstance(data, dict) else {}


def build_demo(ctx: AppContext, gpu: Callable | None = None) -> gr.Blocks:
    """The whole app as a `gr.Blocks` (not launched).

    `gpu` decorates the callbacks that run models (e.g. `spaces.GPU` on a ZeroGPU Space)."""
    cb = Callbacks(ctx)
    cb.upload_dirs = [gr.utils.get_upload_folder()]
    # canvas pictures and session downloads are served in place: Gradio keeps no copy that
    # would outlive the session (ending it deletes its folder, the only copy)
    gr.set_static_paths([str(ctx.display_dir), str(ctx.files_root)])
    examples = cb.example_paths()
    queries = _example_queries(ctx)
    gallery_views = list(ctx.settings.gallery_views)
    large = ctx.large                      # the --gallery gallery (None: only the examples)
    examples_first = large is None         # with one, it is what the Search tab searches first

    def preview(args):
        """The canvas's fast path: masks for prompts (no session state, shared caches only)."""
        payload = args[0] if isinstance(args, list) and args else args
        try:
            return cb.preview(payload if isinstance(payload, dict) else {})
        except Exception as exc:  # the canvas shows the reason; never a stack trace
            traceback.print_exc(file=sys.stderr)
            return {"key": None, "ok": False, "reason": error_message(exc)}

    with gr.Blocks(title=TITLE, delete_cache=(serving.CACHE_SWEEP_S, serving.CACHE_MAX_AGE_S)) as demo:
        # Per-session state: dropped (with the session's files) SESSION_TTL_S after its last
        # event, or at once when the page is closed (demo.unload below: Gradio runs it when
        # the page's heartbeat request ends).
        session = gr.State(Session(), time_to_live=serving.SESSION_TTL_S, delete_callback=cb.end_session)
        gr.Markdown(INTRO, elem_id="header")
        with gr.Row():
            banner = gr.Markdown(ctx.banner(), elem_id="banner")
            untrained_btn = gr.Button("Use untrained models", variant="secondary", scale=0,
                                      visible=False, elem_id="use-untrained")
        timer = gr.Timer(1.5, active=True)

        # ------------------------------------------------------------ Segment
        with gr.Row(equal_height=False, elem_id="segment-row"):
            with gr.Column(scale=3, min_width=300, elem_id="canvas-col"):
                canvas = mask_canvas(preview, name="canvas", elem_id="canvas")
                status = gr.Markdown("", elem_id="status")
                info = gr.Markdown("No image yet: upload one or pick an example.", elem_id="info")
            with gr.Column(scale=1, min_width=260):
                # beside the canvas on a wide screen, after it on a phone (the canvas comes first)
                sam_choice = gr.Dropdown([(sam_label(n), n) for n in ctx.sam_options()],
                                         value=ctx.engine.settings.sam, label="SAM model (your session)",
                                         elem_id="sam-model")
                example_gallery = gr.Gallery(
                    value=[(str(p), p.stem) for p in examples], label="Pick an example",
                    columns=2, height=250, allow_preview=False, object_fit="cover",
                    elem_id="examples")
                with gr.Column(elem_id="downloads"):
                    buttons = [gr.DownloadButton(label, value=None, size="sm", elem_id=eid,
                                                 interactive=False) for eid, label, _ in DOWNLOADS]
                    export_note = gr.Markdown("Downloads: select an object first.", elem_id="export-note")

        seg_outputs = [session, canvas, info, status, *buttons, export_note]

        def segment_values(out: SegmentOut, request: gr.Request) -> tuple:
            """The Segment area's outputs; the session is registered with its page first, so
            closing the page deletes any file it was just given."""
            cb.register(out.session, request.session_hash)
            ex = out.exports
            files = [getattr(ex, attr) for _, _, attr in DOWNLOADS]
            dls = [gr.DownloadButton(value=f, interactive=f is not None) for f in files]
            names = [Path(f).name for f in files if f]
            note = ("Downloads (original size): " + ", ".join(names)) if names else ""
            if ex.why:
                note = (note + " · " if note else "Downloads: ") + ex.why
            return (out.session, out.canvas if out.canvas is not None else gr.skip(), out.info,
                    out.status, *dls, note)

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
                                    label=f"nearest objects ({name})", columns=4, height=130,
                                    allow_preview=False, elem_id=f"nn-{name}",
                                    elem_classes=["cols4"]))

            with gr.Tab("Search", id="search"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=260):
                        choices = [("Examples", "examples")] + ([(large.label(), "large")] if large is not None else [])
                        where = gr.Radio(choices, value="examples" if examples_first else "large",
                                         label="Search in", visible=large is not None, elem_id="search-gallery")
                        large_info = gr.Markdown(ctx.large_status(), visible=large is not None,
                                                 elem_id="large-info")
                        query_source = gr.Radio(["selected object", "text"], value="selected object",
                                                label="Query with", elem_id="query-source")
                        query_text = gr.Textbox(label="Text query", placeholder="a cat",
                                                max_length=serving.MAX_TEXT_CHARS, elem_id="query-text")
                        if queries.get("search"):
                            gr.Examples([[q] for q in queries["search"]], inputs=[query_text],
                                        label="Example texts")
                        # the example gallery's own controls, shown while it is the one searched (a
                        # large gallery has its view and metric fixed when built, and pages results)
                        with gr.Column(visible=examples_first, elem_id="example-controls") as example_controls:
                            search_view = gr.Radio(gallery_views, value="crop" if "crop" in gallery_views
                                                   else gallery_views[0], elem_id="search-view",
                                                   label="View (changing it searches again)")
                            metric = gr.Radio(["cosine", "l2"], value="cosine", elem_id="metric",
                                              label="Metric (changing it searches again)")
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
                        results = gr.Gallery(label="Results (select one to see its source)", columns=4,
                                             height=420, allow_preview=False, elem_id="results",
                                             elem_classes=["cols4"])
                        with gr.Row(visible=large is not None, equal_height=True, elem_id="pager"):
                            prev_btn = gr.Button("Previous", size="sm", scale=0, interactive=False,
                                                 elem_id="page-prev")
                            page_line = gr.Markdown("", elem_id="page-line")
                            next_btn = gr.Button("Next", size="sm", scale=0, interactive=False,
                                                 elem_id="page-next")
                        hit_info = gr.Markdown("", elem_id="hit-info")
                        hit_canvas = mask_canvas(None, readonly=True, name="hit", elem_id="hit-canvas")

            with gr.Tab("Refer", id="refer"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=260):
                        refer_text = gr.Textbox(label="Referring expression",
                                                placeholder="the cat on the left",
                                                max_length=serving.MAX_TEXT_CHARS, elem_id="refer-text")
                        refer_btn = gr.Button("Find it", variant="primary", elem_id="refer-btn")
                        if queries.get("refer"):
                            gr.Examples([[q["text"]] for q in queries["refer"]], inputs=[refer_text],
                                        label="Example expressions (pick the matching example image)")
                        parsed = gr.Markdown("", elem_id="refer-parsed")
                    with gr.Column(scale=2):
                        gr.Markdown("The chosen object is drawn on the canvas above and becomes the "
                                    "selected object.")
                        refer_candidates = gr.Gallery(label="Top candidates", columns=4, height=220,
                                                      allow_preview=False, elem_id="refer-candidates",
                                                      elem_classes=["cols4"])

        # ------------------------------------------------------------ wiring
        # Loading an image is two events: `begin_load` (quick: read, check, show the picture)
        # runs with the light events; the SAM encoding follows in the encoder's own queue
        # (one at a time; the status line shows the person's place in it).
        def on_example(sess: Session, evt: gr.SelectData, request: gr.Request):
            cb.register(sess, request.session_hash)
            path, name = cb.example(evt.index)
            return segment_values(cb.begin_load(sess, path, name), request)

        def on_upload(sess: Session, evt: gr.EventData, request: gr.Request):
            cb.register(sess, request.session_hash)
            data = _event_data(evt)
            path = cb.upload_path(data.get("path"), cb.upload_dirs)
            return segment_values(cb.begin_load(sess, path, str(data.get("name") or Path(path).name)),
                                  request)

        def on_encode(sess: Session, request: gr.Request):
            if sess.image is None or sess.embedding is not None:
                return {status: gr.skip()}
            return segment_values(cb.finish_load(sess, sess.image_key), request)

        def on_model(sess: Session, name: str, request: gr.Request):
            cb.register(sess, request.session_hash)
            return segment_values(cb.set_model(sess, name), request)

        def on_unload(request: gr.Request):
            cb.end_session_of(request.session_hash)

        def on_prompts(sess: Session, evt: gr.EventData, request: gr.Request):
            return segment_values(cb.commit_prompts(sess, _event_data(evt)), request)

        def on_pick(sess: Session, evt: gr.EventData, request: gr.Request):
            return segment_values(cb.pick(sess, _event_data(evt)), request)

        def on_everything(sess: Session, evt: gr.EventData, request: gr.Request):
            return segment_values(cb.everything(sess, _event_data(evt).get("key")), request)

        def on_compare(sess: Session, progress=gr.Progress()):
            sess, views, tiles, message = cb.compare(sess, _progress(progress))
            return (sess, *views, *tiles, message)

        def page_values(out: PageOut) -> tuple:
            return (out.session, out.tiles, out.status, out.line, gr.Button(interactive=out.has_prev),
                    gr.Button(interactive=out.has_next))

        def on_search(sess, gallery, source, text, view, metric_name, k, mine, progress=gr.Progress()):
            if gallery == "large":
                return page_values(cb.search_large(sess, source, text, _progress(progress)))
            sess, tiles, message = cb.search(sess, source, text, view, metric_name, k, mine, _progress(progress))
            return sess, tiles, message, "", gr.Button(interactive=False), gr.Button(interactive=False)

        def on_research(sess, gallery, source, text, view, metric_name, k, mine, progress=gr.Progress()):
            if sess.last_query is None:
                return (gr.skip(),) * 6
            return on_search(sess, gallery, source, text, view, metric_name, k, mine, progress)

        def on_where(gallery: str):
            """The example gallery's controls are shown only while it is the one searched."""
            return gr.Column(visible=gallery != "large")

        def on_previous(sess: Session):
            return page_values(cb.turn_page(sess, -1))

        def on_next(sess: Session):
            return page_values(cb.turn_page(sess, 1))

        def on_hit(sess: Session, evt: gr.SelectData):
            return cb.show_hit(sess, evt.index)

        def on_add_selected(sess: Session, progress=gr.Progress()):
            return cb.add_selected(sess, _progress(progress))

        def on_add_all(sess: Session, progress=gr.Progress()):
            return cb.add_all(sess, _progress(progress))

        def on_parse(text: str):
            return cb.parse_expression(text), "Parsed; grounding it in the image..."

        def on_refer(sess: Session, text: str, request: gr.Request, progress=gr.Progress()):
            if not text or not text.strip():
                return {status: gr.skip()}   # on_parse already said why
            out, tiles = cb.refer(sess, text, _progress(progress))
            return (*segment_values(out, request), tiles)

        def on_tick():
            done = ctx.loaded.is_set() and (ctx.load_error or (ctx.gallery_set.ready or ctx.gallery_set.error)
                                            and (large is None or large.checked))
            return (ctx.banner(), gr.Button(visible=bool(ctx.load_error)), ctx.gallery_status(),
                    ctx.large_status(), gr.Timer(active=not done))

        def on_untrained():
            if ctx.use_untrained() is None:   # refused: the trained models are working
                return gr.skip(), gr.Button(visible=False), gr.skip(), gr.skip()
            return (ctx.banner(), gr.Button(visible=False), gr.Timer(active=True),
                    "Switching to untrained models (random weights) for everybody on this server...")

        def heavy(fn: Callable, with_canvas: bool = False) -> Callable:
            return guard(gpu(fn) if gpu else fn, status, canvas if with_canvas else None)

        # Fairness: each kind of work has its own concurrency group, so a click never waits
        # in the queue behind another person's encoding or everything-mode run (the canvas's
        # hover/click preview is a server function outside the queue; the segmenter's
        # separate encoder/decoder locks keep it from waiting inside, too). None of these
        # events is an API endpoint (api_visibility="private"): only the page calls them.
        quiet = {"show_progress": "hidden"}
        private = {"api_visibility": "private"}
        light = {"concurrency_id": "light", "concurrency_limit": 4, **private}
        click = {"concurrency_id": "click", "concurrency_limit": serving.CLICK_WORKERS, **private}
        encoder = {"concurrency_id": "encoder", "concurrency_limit": 1, "show_progress": "minimal",
                   "show_progress_on": [status], **private}
        allmasks = {"concurrency_id": "everything", "concurrency_limit": 1, **private}
        clip = {"concurrency_id": "clip", "concurrency_limit": 1, **private}
        browse = {"concurrency_id": "browse", "concurrency_limit": 2, **private}   # pages: disk reads
        encode = guard(gpu(on_encode) if gpu else on_encode, status, canvas)
        example_gallery.select(heavy(on_example, True), [session], seg_outputs, **quiet, **light).then(
            encode, [session], seg_outputs, **encoder)
        canvas.upload(heavy(on_upload, True), [session], seg_outputs, **quiet, **light).then(
            encode, [session], seg_outputs, **encoder)
        sam_choice.input(heavy(on_model, True), [session, sam_choice], seg_outputs, **quiet, **light).then(
            encode, [session], seg_outputs, **encoder)
        # every prompt change is committed (Gradio's default "once" dropped a change made while
        # the previous commit ran); commit_prompts drops the older of two by their version
        canvas.prompts(heavy(on_prompts, True), [session], seg_outputs, trigger_mode="multiple",
                       **quiet, **click)
        canvas.pick(guard(on_pick, status, canvas), [session], seg_outputs, **quiet, **click)
        canvas.everything(heavy(on_everything, True), [session], seg_outputs, **quiet, **allmasks)
        compare_btn.click(heavy(on_compare), [session],
                          [session, *view_images, *view_neighbours, status], **clip)
        search_inputs = [session, where, query_source, query_text, search_view, metric, top_k, include_mine]
        search_outputs = [session, results, status, page_line, prev_btn, next_btn]
        search_btn.click(heavy(on_search), search_inputs, search_outputs, **clip)
        query_text.submit(lambda: "text", None, query_source, **light).then(
            heavy(on_search), search_inputs, search_outputs, **clip)
        for control in (search_view, metric):
            control.change(heavy(on_research), search_inputs, search_outputs, **clip)
        where.change(on_where, [where], [example_controls], **light).then(
            heavy(on_research), search_inputs, search_outputs, **clip)
        prev_btn.click(guard(on_previous, status), [session], search_outputs, **browse)
        next_btn.click(guard(on_next, status), [session], search_outputs, **browse)
        results.select(guard(on_hit, status), [session], [hit_canvas, hit_info], **quiet, **click)
        add_sel_btn.click(heavy(on_add_selected), [session], [session, my_info, status], **clip)
        add_all_btn.click(heavy(on_add_all), [session], [session, my_info, status], **allmasks)
        refer_outputs = seg_outputs + [refer_candidates]
        for trigger in (refer_btn.click, refer_text.submit):
            trigger(guard(on_parse, status), [refer_text], [parsed, status], **click).then(
                heavy(on_refer, True), [session, refer_text], refer_outputs, **allmasks)
        tick_outputs = [banner, untrained_btn, gallery_info, large_info, timer]
        timer.tick(on_tick, None, tick_outputs, **light)
        untrained_btn.click(on_untrained, None, [banner, untrained_btn, timer, status], **light)
        demo.load(on_tick, None, tick_outputs, **light)
        demo.unload(on_unload)
    def kept_files() -> set:   # the page's own files (example thumbnails) and live sessions'
        page = {f for block in demo.blocks.values() for f in getattr(block, "keep_in_cache", set())}
        return page | cb.in_use()

    ctx.start_sweeper(cb.upload_dirs + [str(ctx.display_dir)], serving.CACHE_SWEEP_S,
                      serving.CACHE_MAX_AGE_S, kept_files, also=cb.sweep_session_folders)
    return demo


def _progress(progress: gr.Progress) -> Callable[[float, str], None]:
    """Adapt gr.Progress to the callbacks' progress(fraction, note)."""
    def report(fraction: float, note: str) -> None:
        try:
            progress(min(max(float(fraction), 0.0), 1.0), desc=note)
        except Exception:  # progress is cosmetic; never let it break a callback
            pass
    return report
