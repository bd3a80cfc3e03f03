"""The Gradio Blocks app: a shell that composes one module per panel (`demo/panels/`).

Everything a person does lives in a per-session `gr.State(Session())`; the models are
shared through the one `AppContext`. The shell owns what every panel shares: the session,
the status line, the canvas (made by the Segment panel), the concurrency groups, the
error guard, and the page's lifetime (banner timer, unload, the file sweeper). Every
callback is wrapped by `guard`: an exception becomes a warning toast plus a line in the
status bar (and a notice on the canvas), the outputs stay as they were, and the session
stays usable; a result for an image that is no longer current (`Stale`) is dropped.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import gradio as gr

from demo import api
from demo import settings as serving
from demo.callbacks import Callbacks
from demo.context import TITLE, AppContext
from demo.panels import compare, dataset, find, refer, search, segment
from demo.state import Session
from demo.wiring import QUIET, PanelHost

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
/* contrast (WCAG AA, checked by axe-core): Gradio's subdued footer link and primary buttons */
#banner { overflow: visible !important; max-height: none !important; }
.show-api, footer a, footer button, .min_value, .max_value { color: #3d3d3d !important; }
button.primary { background: #b34700 !important; border-color: #b34700 !important; color: #fff !important; }
@media (max-width: 700px) {
  .intro-more { display: none; }
  #header h1 { font-size: 1.25em; margin: 0; }
  #banner { font-size: 12px; }
}
"""
#: Runs once on page load (launch(js=...)): accessibility fixes for Gradio's own markup.
A11Y_JS = (Path(__file__).with_name("a11y.js")).read_text()
#: The page's script (app.py's launch(js=...)): the accessibility fixes and the Dataset tab's keys.
PAGE_JS = f"() => {{ ({A11Y_JS.strip()})(); ({dataset.KEYS_JS.strip()})(); }}"
EXAMPLE_QUERIES_FILE = "queries.json"

def example_queries(ctx: AppContext) -> dict:
    """Example texts for Search and Refer from the examples folder's queries.json."""
    path = ctx.settings.examples_dir / EXAMPLE_QUERIES_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"search": [], "refer": []}


def build_demo(ctx: AppContext, gpu: Callable | None = None) -> gr.Blocks:
    """The whole app as a `gr.Blocks` (not launched).

    `gpu` decorates the callbacks that run models (e.g. `spaces.GPU` on a ZeroGPU Space)."""
    cb = Callbacks(ctx)
    cb.files.upload_dirs = [gr.utils.get_upload_folder()]
    # canvas pictures and session downloads are served in place: Gradio keeps no copy that
    # would outlive the session (ending it deletes its folder, the only copy)
    gr.set_static_paths([str(ctx.display_dir), str(ctx.files_root)])
    with api.ApiBlocks(title=TITLE, delete_cache=(serving.CACHE_SWEEP_S, serving.CACHE_MAX_AGE_S)) as demo:
        # Per-session state: dropped (with the session's files) SESSION_TTL_S after its last
        # event, or at once when the page is closed (demo.unload below: Gradio runs it when
        # the page's heartbeat request ends).
        session = gr.State(Session(), time_to_live=serving.SESSION_TTL_S, delete_callback=cb.files.end_session)
        gr.Markdown(INTRO, elem_id="header")
        with gr.Row():
            banner = gr.Markdown(ctx.banner(), elem_id="banner")
            untrained_btn = gr.Button("Use untrained models", variant="secondary", scale=0,
                                      visible=False, elem_id="use-untrained")
        timer = gr.Timer(1.5, active=True)
        sh = PanelHost(ctx, cb, session, status=None, gpu=gpu, queries=example_queries(ctx))
        segment.build(sh)
        with gr.Tabs():
            with gr.Tab("Compare views", id="compare") as compare_tab:
                compare.build(sh)
            with gr.Tab("Search", id="search") as search_tab:
                search_panel = search.build(sh)
            with gr.Tab("Refer", id="refer") as refer_tab:
                refer.build(sh, refer_tab)
            with gr.Tab("Find & label", id="find") as find_tab:
                find.build(sh)
            with gr.Tab("Dataset", id="dataset") as dataset_tab:
                dataset.build(sh)
        _track_open_tab(sh, {"compare": compare_tab, "search": search_tab, "refer": refer_tab,
                             "find": find_tab, "dataset": dataset_tab})
        _wire_page(sh, demo, banner, untrained_btn, timer, search_panel)
        # The public API ("Use via API", MCP tools): stateless endpoints, apart from the
        # page's own events (all private), in the same concurrency groups (demo/api.py).
        api.register(ctx, gpu)
    _start_sweeper(ctx, cb, demo)
    return demo


def _track_open_tab(sh: PanelHost, tabs: dict) -> None:
    """Keep `Session.open_tab` up to date, so work that depends on the tab showing (Refer
    prepares a newly loaded image) knows it without a round trip to the browser."""
    def opener(name: str):
        def on_select(sess: Session):
            sess.open_tab = name
        return on_select

    for name, tab in tabs.items():
        tab.select(opener(name), [sh.session], None, **QUIET, **sh.q["light"])


def _wire_page(sh: PanelHost, demo: gr.Blocks, banner, untrained_btn, timer, search_panel) -> None:
    """The banner's timer, the untrained-models switch, and closing the page."""
    ctx, large = sh.ctx, sh.ctx.large

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

    def on_unload(request: gr.Request):
        sh.cb.files.end_session_of(request.session_hash)

    tick_outputs = [banner, untrained_btn, search_panel.gallery_info, search_panel.large_info, timer]
    timer.tick(on_tick, None, tick_outputs, **sh.q["light"])
    untrained_btn.click(on_untrained, None, [banner, untrained_btn, timer, sh.status], **sh.q["light"])
    demo.load(on_tick, None, tick_outputs, **sh.q["light"])
    demo.unload(on_unload)


def _start_sweeper(ctx: AppContext, cb: Callbacks, demo: gr.Blocks) -> None:
    def kept_files() -> set:   # the page's own files (example thumbnails) and live sessions'
        page = {f for block in demo.blocks.values() for f in getattr(block, "keep_in_cache", set())}
        return page | cb.files.in_use()

    ctx.start_sweeper(cb.files.upload_dirs + [str(ctx.display_dir)], serving.CACHE_SWEEP_S,
                      serving.CACHE_MAX_AGE_S, kept_files, also=cb.files.sweep_session_folders)
