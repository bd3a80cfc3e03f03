"""Compare views: the selected object in every view, each with its nearest gallery objects."""
from __future__ import annotations

import gradio as gr

from core.views import VIEWS, render_view
from demo import rendering
from demo.galleries import SessionGalleries
from demo.outputs import Progress, no_progress
from demo.state import Session
from demo.wiring import PanelHost, progress_adapter
from demo.workspace import Workspace


class CompareCallbacks:
    """The Compare panel's work."""

    def __init__(self, ws: Workspace, galleries: SessionGalleries):
        self.ws = ws
        self.ctx = ws.ctx
        self.galleries = galleries

    def compare(self, session: Session, progress: Progress = no_progress) -> tuple:
        """Every view of the selected object and, where the gallery has that view, its
        nearest objects. Returns (session, [view image per VIEW], [neighbour tiles per VIEW], status)."""
        image, mask = session.require_image(), session.require_selection()
        rendered = {name: render_view(name, image, mask) for name in VIEWS}
        progress(0.05, "example gallery")
        galleries = self.galleries.galleries(progress)
        searchable_views = [v for v in VIEWS if v in galleries]
        progress(0.6, "embedding the views")
        vectors = self.ws.engine.embedder.embed_images([rendered[v] for v in searchable_views])
        neighbours = {}
        k = self.ctx.settings.neighbours
        for view, vec in zip(searchable_views, vectors):
            gallery = self.galleries.searchable(session, view, "cosine", True)
            hits = gallery.search(vec[None], k)[0]
            neighbours[view] = [(self.galleries.hit_tile(session, h), self.galleries.hit_caption(h, "cosine")) for h in hits]
        views = [rendering.thumbnail(rendered[v], 320) for v in VIEWS]
        tiles = [neighbours.get(v, []) for v in VIEWS]
        missing = [v for v in VIEWS if v not in galleries]
        note = f" (no gallery for {', '.join(missing)})" if missing else ""
        return (session, views, tiles,
                f"Compared {len(VIEWS)} views; nearest objects for {len(searchable_views)} of them{note}.")


# ---------------------------------------------------------------------------- the panel
def build(sh: PanelHost) -> None:
    """A button, and per view: the object rendered in it and its nearest gallery objects."""
    gr.Markdown("The selected object in every view the engine offers, each with its nearest objects in "
                "the gallery under CLIP (the paper compared **mask** and **crop**).")
    compare_btn = gr.Button("Compare views of the selected object", variant="primary", elem_id="compare-btn")
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
                        allow_preview=False, elem_id=f"nn-{name}", elem_classes=["cols4"]))

    def on_compare(sess: Session, progress=gr.Progress()):
        sess, views, tiles, message = sh.cb.compare.compare(sess, progress_adapter(progress))
        return (sess, *views, *tiles, message)

    compare_btn.click(sh.heavy(on_compare), [sh.session],
                      [sh.session, *view_images, *view_neighbours, sh.status], **sh.q["clip"])
