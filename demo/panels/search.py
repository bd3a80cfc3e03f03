"""Search: the example gallery (with the person's additions) or a large gallery
(`--gallery`, paged), queried by text or by the selected object; a hit shows its source."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np

from core.gallery.browse import hit_thumbnail
from core.io.masks import box_to_mask, rle_to_mask
from core.sam.segmenter import image_key
from core.views import render_view
from demo import settings as serving
from demo.biggallery import hit_picture, placeholder, source_and_mask, source_problem
from demo.canvas import mask_canvas
from demo.galleries import SessionGalleries
from demo.outputs import PageOut, Progress, metric_order, ms_since, no_progress
from demo.state import Session, UserError
from demo.wiring import QUIET, PanelHost, progress_adapter
from demo.workspace import Workspace


class SearchCallbacks:
    """The Search panel's work."""

    def __init__(self, ws: Workspace, galleries: SessionGalleries):
        self.ws = ws
        self.ctx = ws.ctx
        self.galleries = galleries

    def query_vector(self, session: Session, query_source: str, text: str, view: str) -> tuple:
        """((1, D) float32 CLIP query, what it is): the text, or the selected object in `view`."""
        if query_source == "text":
            text = self.ws.check_text(text, "search text")
            if not text:
                raise UserError("Type a text to search for (e.g. 'a cat').")
            return self.ws.engine.embedder.embed_texts([text]), f"text '{text}'"
        image, mask = session.require_image(), session.require_selection()
        return (self.ws.engine.embedder.embed_images([render_view(view, image, mask)]),
                f"the selected object ({view} view)")

    def search(self, session: Session, query_source: str, text: str, view: str, metric: str,
               k: int, include_mine: bool, progress: Progress = no_progress) -> tuple:
        """Query the gallery with the selected object or a text. Returns
        (session, result tiles, status)."""
        if metric not in ("cosine", "l2"):
            raise UserError(f"Unknown metric {metric!r}: choose cosine or l2.")
        k = int(k)
        if not 1 <= k <= 100:
            raise UserError("The number of results must be between 1 and 100.")
        query, what = self.query_vector(session, query_source, text, view)
        gallery = self.galleries.searchable(session, view, metric, include_mine, progress)
        start = time.perf_counter()
        hits = gallery.search(query, k)[0]
        took = ms_since(start)
        session.hits, session.hits_from = hits, "examples"
        session.last_query = (query_source, text or "")
        tiles = [(self.galleries.hit_tile(session, h), self.galleries.hit_caption(h, metric)) for h in hits]
        order = metric_order(metric)
        return (session, tiles,
                f"{len(hits)} results for {what} among {len(gallery)} objects "
                f"(view {view}, {metric}: {order}; search {took}). Select a tile to see its source.")

    def search_large(self, session: Session, query_source: str, text: str,
                     progress: Progress = no_progress) -> PageOut:
        """Query the large gallery (--gallery) with a text or the selected object, rendered in
        the gallery's own view; shows page 1. The session keeps the query vector only."""
        large = self.ctx.large_gallery()
        progress(0.1, "embedding the query")
        query, what = self.query_vector(session, query_source, text, large.view)
        session.page_query = np.asarray(query, np.float32).reshape(-1).copy()
        session.page_what, session.page_offset = what, 0
        session.last_query = (query_source, text or "")
        return self.show_page(session, 0)

    def turn_page(self, session: Session, step: int) -> PageOut:
        """The next (`step` 1) or previous (-1) page of the session's last large-gallery query."""
        if session.page_query is None:
            raise UserError("Search your gallery first.")
        if step < 0 and session.page_offset == 0:
            raise UserError("This is the first page.")
        return self.show_page(session, max(0, session.page_offset + int(step) * self.ctx.settings.page_size))

    def show_page(self, session: Session, offset: int) -> PageOut:
        """Hits `offset` .. `offset` + page size - 1 of the session's query, each tile its
        thumbnail, else drawn from its source image on disk (a placeholder and a note where
        that cannot be read)."""
        large = self.ctx.large_gallery()
        start = time.perf_counter()
        page = large.page(session.page_query, offset, self.ctx.settings.page_size)
        took = ms_since(start)
        if not page.hits and offset > 0:
            raise UserError("There are no more results.")
        session.page_offset, session.hits, session.hits_from = offset, page.hits, "large"
        tiles, problems = [], []
        for hit in page.hits:
            picture, problem = hit_picture(hit.record, self.ctx.settings.page_tile_side, large.gallery)
            caption = self.galleries.hit_caption(hit, large.metric)
            tiles.append((picture, caption + (" · source image missing" if problem else "")))
            problems += [problem] if problem else []
        note = (f" ⚠️ {len(problems)} source image(s) could not be read, shown as grey tiles "
                f"(first: {problems[0]})." if problems else "")
        status = (f"Page {offset // page.limit + 1}: {len(page.hits)} results for {session.page_what} in "
                  f"{large.name} (search {took}). "
                  f"Select a tile to see its source.{note}")
        return PageOut(session, tiles, status, self.page_line(large, page), offset > 0, page.has_more)

    @staticmethod
    def page_line(large, page) -> str:
        """"Results 21-40 of 1,234 objects · page 2 · cosine (higher is closer), view crop"."""
        order = metric_order(large.metric)
        fixed = f"{large.metric} ({order}), view {large.view}: fixed when the gallery was built"
        if not page.hits:
            return f"No results: {large.name} holds {page.total:,} objects."
        first, last = page.offset + 1, page.offset + len(page.hits)
        return (f"Results {first}-{last} of {page.total:,} objects · page {page.offset // page.limit + 1}"
                f"{'' if page.has_more else ' (the last)'} · {fixed}")

    def show_large_hit(self, session: Session, hit) -> tuple[str, str]:
        """(canvas message, Markdown) for a large-gallery hit: its source image read from disk,
        the object selected on it; when the file cannot be read, its thumbnail (else a
        placeholder) with a notice that the full picture is missing."""
        rec = hit.record
        head = f"**#{hit.rank + 1}** score {hit.score:.4f} · source `{Path(rec.source).name}`"
        try:
            image, mask = source_and_mask(rec)
        except (OSError, ValueError, KeyError, TypeError) as exc:   # missing, unreadable, replaced, bad RLE
            problem = source_problem(rec, exc)
            thumb = hit_thumbnail(self.ctx.large_gallery().gallery, rec)
            if thumb is not None:
                return self.ws.picture_message(image_key(thumb), Path(rec.source).name, thumb,
                                            notice=f"Full picture missing, its thumbnail shown: {problem}"), (
                    f"{head} · ⚠️ the full picture is missing, only its thumbnail is shown ({problem})")
            picture = placeholder(2 * self.ctx.settings.page_tile_side)
            return self.ws.picture_message("missing-source", Path(rec.source).name, picture,
                                        notice=f"Source image missing: {problem}"), (
                f"{head} · ⚠️ the source image cannot be shown ({problem})")
        x1, y1, x2, y2 = (int(v) for v in rec.box)
        md = (f"{head} · box ({x1}, {y1}, {x2}, {y2}) · view {rec.view}"
              + (f" · category **{rec.category}**" if rec.category else ""))
        return self.ws.picture_message(image_key(image), Path(rec.source).name, image, mask), md

    def show_hit(self, session: Session, index: int) -> tuple[str, str]:
        """(canvas message: the hit's source image with its object, Markdown) for result `index`."""
        if not isinstance(index, int) or not 0 <= index < len(session.hits):
            raise UserError("Run a search and select one of its results.")
        hit = session.hits[index]
        if session.hits_from == "large":
            return self.show_large_hit(session, hit)
        rec = hit.record
        image = self.galleries.record_image(session, rec.source)
        if rec.mask_rle:
            mask = rle_to_mask(rec.mask_rle)
        else:
            mask = box_to_mask(rec.box, image.shape[:2])
        x1, y1, x2, y2 = (int(v) for v in rec.box)
        md = (f"**#{hit.rank + 1}** score {hit.score:.4f} · source `{Path(rec.source).name}` · "
              f"box ({x1}, {y1}, {x2}, {y2}) · view {rec.view}"
              + (f" · category **{rec.category}**" if rec.category else ""))
        return self.ws.picture_message(image_key(image), Path(rec.source).name, image, mask), md


# ---------------------------------------------------------------------------- the panel
@dataclass
class SearchWidgets:
    """The widgets other parts of the page update (the banner timer refreshes these two)."""

    gallery_info: gr.Markdown
    large_info: gr.Markdown


def build(sh: PanelHost) -> SearchWidgets:
    """Where to search, the query (selected object or text), the example gallery's controls,
    "my gallery" additions, results with paging, and the selected hit on a read-only canvas."""
    ctx, large = sh.ctx, sh.ctx.large           # large: the --gallery gallery (None: examples only)
    examples_first = large is None              # with one, it is what Search searches first
    views = list(ctx.settings.gallery_views)
    w: dict = {}
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            choices = [("Examples", "examples")] + ([(large.label(), "large")] if large is not None else [])
            w["where"] = gr.Radio(choices, value="examples" if examples_first else "large", label="Search in",
                                  visible=large is not None, elem_id="search-gallery")
            w["large_info"] = gr.Markdown(ctx.large_status(), visible=large is not None, elem_id="large-info")
            w["source"] = gr.Radio(["selected object", "text"], value="selected object", label="Query with",
                                   elem_id="query-source")
            w["text"] = gr.Textbox(label="Text query", placeholder="a cat", max_length=10 * serving.MAX_TEXT_CHARS,
                                   elem_id="query-text")
            if sh.queries.get("search"):
                gr.Examples([[q] for q in sh.queries["search"]], inputs=[w["text"]], label="Example texts")
            # the example gallery's own controls, shown while it is the one searched (a large
            # gallery has its view and metric fixed when built, and pages results)
            with gr.Column(visible=examples_first, elem_id="example-controls") as w["example_controls"]:
                w["view"] = gr.Radio(views, value="crop" if "crop" in views else views[0], elem_id="search-view",
                                     label="View (changing it searches again)")
                w["metric"] = gr.Radio(["cosine", "l2"], value="cosine", elem_id="metric",
                                       label="Metric (changing it searches again)")
                w["k"] = gr.Slider(1, 30, value=8, step=1, label="Results", elem_id="top-k")
                w["mine"] = gr.Checkbox(True, label="Include my gallery additions", elem_id="include-mine")
            w["search"] = gr.Button("Search", variant="primary", elem_id="search-btn")
            w["gallery_info"] = gr.Markdown(ctx.gallery_status(), elem_id="gallery-info")
            w["my_info"] = gr.Markdown("Your gallery is empty.", elem_id="my-gallery")
            with gr.Row():
                w["add_sel"] = gr.Button("Add selected object", size="sm", elem_id="add-selected")
                w["add_all"] = gr.Button("Add all objects of my image", size="sm", elem_id="add-all")
        with gr.Column(scale=2):
            w["results"] = gr.Gallery(label="Results (select one to see its source)", columns=4, height=420,
                                      allow_preview=False, elem_id="results", elem_classes=["cols4"])
            with gr.Row(visible=large is not None, equal_height=True, elem_id="pager"):
                w["prev"] = gr.Button("Previous", size="sm", scale=0, interactive=False, elem_id="page-prev")
                w["page_line"] = gr.Markdown("", elem_id="page-line")
                w["next"] = gr.Button("Next", size="sm", scale=0, interactive=False, elem_id="page-next")
            w["hit_info"] = gr.Markdown("", elem_id="hit-info")
            w["hit_canvas"] = mask_canvas(None, readonly=True, name="hit", elem_id="hit-canvas")
    _wire(sh, w)
    return SearchWidgets(w["gallery_info"], w["large_info"])


def _wire(sh: PanelHost, w: dict) -> None:
    """Search, re-search on view / metric / gallery changes, paging, hits, additions."""
    cb, q = sh.cb, sh.q

    def page_values(out: PageOut) -> tuple:
        return (out.session, out.tiles, out.status, out.line, gr.Button(interactive=out.has_prev),
                gr.Button(interactive=out.has_next))

    def on_search(sess, gallery, source, text, view, metric_name, k, mine, progress=gr.Progress()):
        if gallery == "large":
            return page_values(cb.search.search_large(sess, source, text, progress_adapter(progress)))
        sess, tiles, message = cb.search.search(sess, source, text, view, metric_name, k, mine,
                                                progress_adapter(progress))
        return sess, tiles, message, "", gr.Button(interactive=False), gr.Button(interactive=False)

    def on_research(sess, gallery, source, text, view, metric_name, k, mine, progress=gr.Progress()):
        if sess.last_query is None:
            return (gr.skip(),) * 6
        return on_search(sess, gallery, source, text, view, metric_name, k, mine, progress)

    def on_where(gallery: str):
        """The example gallery's controls are shown only while it is the one searched."""
        return gr.Column(visible=gallery != "large")

    def on_add_selected(sess: Session, progress=gr.Progress()):
        return cb.galleries.add_selected(sess, progress_adapter(progress))

    def on_add_all(sess: Session, progress=gr.Progress()):
        return cb.galleries.add_all(sess, progress_adapter(progress))

    inputs = [sh.session, w["where"], w["source"], w["text"], w["view"], w["metric"], w["k"], w["mine"]]
    outputs = [sh.session, w["results"], sh.status, w["page_line"], w["prev"], w["next"]]
    w["search"].click(sh.heavy(on_search), inputs, outputs, **q["clip"])
    w["text"].submit(lambda: "text", None, w["source"], **q["light"]).then(
        sh.heavy(on_search), inputs, outputs, **q["clip"])
    for control in (w["view"], w["metric"]):
        control.change(sh.heavy(on_research), inputs, outputs, **q["clip"])
    w["where"].change(on_where, [w["where"]], [w["example_controls"]], **q["light"]).then(
        sh.heavy(on_research), inputs, outputs, **q["clip"])
    w["prev"].click(sh.guard(lambda s: page_values(cb.search.turn_page(s, -1))), [sh.session], outputs, **q["browse"])
    w["next"].click(sh.guard(lambda s: page_values(cb.search.turn_page(s, 1))), [sh.session], outputs, **q["browse"])
    def on_hit(sess: Session, evt: gr.SelectData):
        return (*cb.search.show_hit(sess, evt.index), gr.skip())

    w["results"].select(sh.guard(on_hit), [sh.session],
                        [w["hit_canvas"], w["hit_info"], sh.status], **QUIET, **q["click"])
    additions = [sh.session, w["my_info"], sh.status]
    w["add_sel"].click(sh.heavy(on_add_selected), [sh.session], additions, **q["clip"])
    w["add_all"].click(sh.heavy(on_add_all), [sh.session], additions, **q["everything"])
