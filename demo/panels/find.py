"""Find & label: every instance of a phrase or like the selected object, and labels for
everything (semantic, instances, panoptic) with their downloads.

Reads the image's shared analysis (the same candidates and CLIP features Refer uses), so
after Everything or Refer ran on an image these answer in well under a second.
"""
from __future__ import annotations

import time

import gradio as gr
import numpy as np

from core.find.instances import Instances
from core.find.labels import id_map_from_masks, label_candidates
from core.find.run import LabelResult, find_in_image, label_result, write_label_outputs
from core.refer import parse
from demo import rendering
from demo import settings as serving
from demo.outputs import ms_since
from demo.state import Session, UserError
from demo.wiring import QUIET, PanelHost
from demo.workspace import Workspace

#: What "Label everything" can show.
LABEL_VIEWS = ("panoptic", "semantic", "instances")
#: The largest picture the panel shows.
PICTURE_SIDE = 768


class FindCallbacks:
    """The Find & label panel's work (plain values in and out)."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.ctx = ws.ctx

    def find(self, session: Session, phrase: str) -> tuple[np.ndarray, str]:
        """Every instance of `phrase` in the session's image: (picture, Markdown list)."""
        phrase = self.ws.check_text(phrase, "phrase")
        if not phrase:
            raise UserError("Type what to find, e.g. 'dogs' or 'the cups on the left'.")
        expression = parse(phrase)
        if not expression.noun:
            raise UserError(f"No noun found in '{phrase[:60]}': say what to find, e.g. 'dogs'.")
        return self.answer(session, *self.timed_find(session, phrase))

    def like(self, session: Session) -> tuple[np.ndarray, str]:
        """The objects like the selected one in the session's image."""
        return self.answer(session, *self.timed_find(session, "", like_mask=session.require_selection()))

    def timed_find(self, session: Session, phrase: str, like_mask: np.ndarray | None = None) -> tuple[Instances, str]:
        """`core.find.run.find_in_image` on the session's image and model (the shared analysis),
        and how long it took."""
        self.ws.embedding(session)   # encoded first (its time is measured for the estimates)
        start = time.perf_counter()
        found = find_in_image(self.ws.engine, session.image, phrase, like_mask=like_mask,
                              automask=self.ws.automask_settings(), sam=self.ws.model(session))
        return found, ms_since(start)

    def answer(self, session: Session, found: Instances, took: str) -> tuple[np.ndarray, str]:
        """The instances drawn on the image (numbered in answer order) and listed."""
        picture = rendering.overlay_masks(session.image, found.masks) if found.count else session.image
        lines = [f"**{found.summary()}** ({took}{', ordered from the ' + found.direction if found.direction else ''})"]
        lines += [f"{i + 1}. box ({b[0]:.0f}, {b[1]:.0f}, {b[2]:.0f}, {b[3]:.0f}) · score {s:.3f}"
                  for i, (b, s) in enumerate(zip(found.boxes, found.scores))]
        return rendering.thumbnail(picture, PICTURE_SIDE), "\n".join(lines)

    def label(self, session: Session, vocabulary: str, view: str) -> tuple[np.ndarray, str, list[str]]:
        """Label every candidate with `vocabulary` (blank: COCO-panoptic); (picture of `view`,
        legend Markdown, download files)."""
        vocab = self.ws.vocabulary(vocabulary)
        start = time.perf_counter()
        candidates = self.ws.grounding_candidates(session)
        result = label_result(label_candidates(candidates, self.ws.engine.embedder, vocab))
        session.labels = result
        took = ms_since(start)
        folder = self.ws.files.files_dir(session) / "labels"
        files = write_label_outputs(folder, result, session.image_name, untrained=self.ctx.engine.untrained,
                                    size=session.original_size)   # the user's file's size, not the working one
        picture, legend = self.show(session, view)
        return picture, f"Labelled {len(candidates)} candidate(s) in {took}. " + legend, [str(f) for f in files.values()]

    def show(self, session: Session, view: str) -> tuple[np.ndarray, str]:
        """The last labelling drawn as `view` (one of LABEL_VIEWS), with its legend."""
        result: LabelResult | None = session.labels
        if result is None:
            raise UserError("Press 'Label everything' first.")
        if view not in LABEL_VIEWS:
            raise UserError(f"Unknown view {view!r}; choose one of {', '.join(LABEL_VIEWS)}.")
        ids, names = _view_ids(result, view)
        picture = _paint(session.image, ids)
        legend = ", ".join(f"{name}" for name in names) or "nothing labelled"
        return rendering.thumbnail(picture, PICTURE_SIDE), f"**{view}**: {legend}"


def _view_ids(result: LabelResult, view: str) -> tuple[np.ndarray, list[str]]:
    """(H, W) int ids to colour and the legend entries of a view."""
    vocab = {c.id: c for c in result.labelling.vocabulary}
    if view == "semantic":
        present = [int(v) for v in np.unique(result.semantic) if v]
        return result.semantic, [f"{vocab[v].name} ({'thing' if vocab[v].isthing else 'stuff'})" for v in present]
    if view == "instances":
        inst = result.instances
        ids = id_map_from_masks(inst.masks)
        return ids, [f"#{k + 1} {n} {s:.2f}" for k, (n, s) in enumerate(zip(inst.names, inst.scores))]
    segs = result.panoptic.segments
    return result.panoptic.id_map, [f"#{s.id} {vocab[s.category_id].name} {s.score:.2f}" for s in segs]


def _paint(image: np.ndarray, ids: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """`image` with each nonzero id of `ids` (H, W) tinted in its own colour."""
    values = [int(v) for v in np.unique(ids) if v]
    colours = rendering.palette(max(values, default=0) + 1)
    out = image.astype(np.float32)
    for v in values:
        region = ids == v
        out[region] = (1 - alpha) * out[region] + alpha * colours[v]
    return out.astype(np.uint8)


# ---------------------------------------------------------------------------- the panel
def build(sh: PanelHost) -> None:
    """A phrase and its instances; 'more like the selected object'; label everything with a
    vocabulary, a view switch, a legend and the downloads."""
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            phrase = gr.Textbox(label="Find all", placeholder="dogs · the cups on the left",
                                max_length=10 * serving.MAX_TEXT_CHARS, elem_id="find-text")
            with gr.Row():
                find_btn = gr.Button("Find all", variant="primary", elem_id="find-btn")
                like_btn = gr.Button("More like the selected object", elem_id="like-btn")
            vocab = gr.Textbox(label="Vocabulary (blank: the 133 COCO-panoptic categories)",
                               placeholder="cat, dog, sofa  ·  or a sentence", elem_id="label-vocab")
            view = gr.Radio(list(LABEL_VIEWS), value="panoptic", label="Show", elem_id="label-view")
            label_btn = gr.Button("Label everything", elem_id="label-btn")
            listing = gr.Markdown("", elem_id="find-list")
            files = gr.File(label="Downloads (COCO instances, COCO panoptic, semantic)", file_count="multiple",
                            interactive=False, elem_id="label-files")
        with gr.Column(scale=2):
            picture = gr.Image(label="Found / labelled", interactive=False, height=480, buttons=[],
                               elem_id="find-picture")
    _wire(sh, phrase, find_btn, like_btn, vocab, view, label_btn, listing, files, picture)


def _wire(sh: PanelHost, phrase, find_btn, like_btn, vocab, view, label_btn, listing, files, picture) -> None:
    cb, q = sh.cb, sh.q

    def on_find(sess: Session, text: str, request: gr.Request):
        cb.files.register(sess, request.session_hash)
        return (*cb.find.find(sess, text), gr.skip())

    def on_like(sess: Session, request: gr.Request):
        cb.files.register(sess, request.session_hash)
        return (*cb.find.like(sess), gr.skip())

    def on_label(sess: Session, words: str, how: str, request: gr.Request):
        cb.files.register(sess, request.session_hash)
        return (*cb.find.label(sess, words, how), gr.skip())

    def on_view(sess: Session, how: str):
        if sess.labels is None:
            return gr.skip(), gr.skip(), gr.skip()
        return (*cb.find.show(sess, how), gr.skip())

    # the status line is an output too: a failure's message goes there (the guard's answer)
    shown = [picture, listing, sh.status]
    for trigger in (find_btn.click, phrase.submit):
        trigger(sh.heavy(on_find), [sh.session, phrase], shown, **q["everything"])
    like_btn.click(sh.heavy(on_like), [sh.session], shown, **q["everything"])
    label_btn.click(sh.heavy(on_label), [sh.session, vocab, view], [picture, listing, files, sh.status],
                    **q["everything"])
    view.change(sh.guard(on_view), [sh.session, view], shown, **QUIET, **q["light"])

