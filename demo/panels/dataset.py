"""Dataset: a set of images in the app. Upload many images or a zip, see each image's state
(not started / proposed / reviewed) in a strip, apply a phrase, a vocabulary or the objects
reviewed so far to every image in the background (progress, cancel), review the proposals
most in doubt first (with why), accept or reject them, export the whole set.

The set lives in the session's folder (`demo.dataset_set.ImageSet`), bounded by
settings.SET_MAX_IMAGES and SET_DISK_MB, and goes with the session.
"""
from __future__ import annotations

import gradio as gr
import numpy as np
from PIL import Image

from core.io.formats import WRITERS, parse_formats
from core.io.labels import ExportMeta
from demo import rendering
from demo import settings as serving
from demo.dataset_set import ApplyJob, ImageSet
from demo.state import Session, UserError
from demo.wiring import QUIET, PanelHost
from demo.workspace import Workspace

PICTURE_SIDE = 768
#: Page script (app.py passes it to launch): in the Dataset tab, <- / A and -> / D step through
#: the set, Enter accepts and Delete rejects the picked proposal; never while typing in a box.
KEYS_JS = """
() => {
  document.addEventListener("keydown", (e) => {
    const prev = document.querySelector("#set-prev");
    if (!prev || prev.offsetParent === null || e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target, tag = (t && t.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select" || (t && t.isContentEditable)) return;
    if (t && t.closest && t.closest("#canvas")) return;
    const ids = {ArrowLeft: "#set-prev", a: "#set-prev", A: "#set-prev", ArrowRight: "#set-next",
                 d: "#set-next", D: "#set-next", Enter: "#set-accept", Delete: "#set-reject"};
    const target = ids[e.key] && document.querySelector(ids[e.key]);
    if (target) { e.preventDefault(); target.click(); }
  });
}
"""
QUEUE_HEADERS = ["#", "image", "object", "class", "doubt", "why"]
EXPORT_CHOICES = ["reviewed only", "all (proposals too)"]


class DatasetCallbacks:
    """The Dataset panel's work (plain values in and out)."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.ctx = ws.ctx

    def images(self, session: Session, create: bool = True) -> ImageSet:
        """The session's set (made in its folder on first use)."""
        if session.dataset is None:
            if not create:
                raise UserError("The set is empty: upload images or a zip first.")
            session.dataset = ImageSet(self.ws.files.files_dir(session) / "dataset")
        return session.dataset

    # ---- the set ------------------------------------------------------------------
    def upload(self, session: Session, paths: list[str] | None) -> tuple[list, str, str]:
        """Add uploaded images / zips: (strip, summary, notes on what was skipped)."""
        if not paths:
            raise UserError("Choose images or a zip to add.")
        checked = [self.ws.files.upload_path(p, self.ws.files.upload_dirs) for p in paths]
        images = self.images(session)
        notes = images.add_files(checked)
        for path in checked:
            self.ws.files.forget_upload(path)
        shown = "; ".join(notes[:8]) + (f" (+{len(notes) - 8} more)" if len(notes) > 8 else "")
        return self.strip(session), images.summary(), f"Skipped: {shown}" if notes else "Added."

    def strip(self, session: Session) -> list[tuple[str, str]]:
        """The thumbnails with "name · state · counts" captions."""
        if session.dataset is None:
            return []
        return [(str(session.dataset.thumb_path(e.name)),
                 f"{e.name} · {e.state} · {e.proposals} proposed, {e.reviewed} reviewed")
                for e in list(session.dataset.entries)]

    def show(self, session: Session, index: int, highlight: int | None = None) -> tuple[np.ndarray, str]:
        """Image `index` of the set with its objects: (picture, object list Markdown)."""
        images = self.images(session, create=False)
        entry = images.entry(index)
        session.dataset_index = images.index_of(entry.name)
        full = np.asarray(Image.open(images.image_path(entry.name)).convert("RGB"))
        objects = images.objects(entry.name)
        picture = rendering.thumbnail(full, PICTURE_SIDE)
        if objects:
            masks = np.stack([_resized(o.mask, picture.shape[:2]) for o in objects])
            picture = rendering.overlay_masks(picture, masks, highlight=highlight)
        lines = [f"**{entry.name}** ({session.dataset_index + 1} of {len(images.entries)}) · {entry.state}"]
        lines += [f"{i + 1}. {o.category} · {'reviewed' if o.reviewed else 'proposal'}"
                  + (f" · p={o.score:.2f}" if o.score is not None else "") + f" · {int(o.mask.sum())} px"
                  for i, o in enumerate(objects)]
        return picture, "\n".join(lines)

    def step(self, session: Session, delta: int) -> tuple[np.ndarray, str]:
        """The previous (-1) or next (+1) image."""
        return self.show(session, session.dataset_index + int(delta))

    # ---- apply to all -------------------------------------------------------------
    def apply(self, session: Session, phrase: str, vocabulary: str, use_examples: bool) -> str:
        """Start "apply to all" in the background; the first progress line."""
        images = self.images(session, create=False)
        if not images.entries:
            raise UserError("The set is empty: upload images or a zip first.")
        if images.job is not None and not images.job.finished:
            raise UserError("An 'apply to all' is running on this set: wait for it or cancel it.")
        phrase = self.ws.check_text(phrase or "", "phrase")
        vocabulary = (vocabulary or "").strip()[:10 * serving.MAX_TEXT_CHARS]
        if not (phrase or vocabulary or use_examples):
            raise UserError("Say what to apply: a phrase, a vocabulary, or the reviewed objects as examples.")
        images.job = ApplyJob(images, self.ws.engine, [e.name for e in images.entries], phrase=phrase or None,
                              vocabulary=vocabulary or None, use_examples=bool(use_examples),
                              automask=self.ws.automask_settings(), work_side=serving.WORK_MAX_SIDE)
        images.job.start()
        return images.job.progress()

    def progress(self, session: Session) -> tuple[str, bool]:
        """(progress line, whether a job is still running)."""
        job = session.dataset.job if session.dataset is not None else None
        if job is None:
            return "", False
        return job.progress(), not job.finished

    def cancel(self, session: Session) -> str:
        job = session.dataset.job if session.dataset is not None else None
        if job is None or job.finished:
            raise UserError("Nothing is running.")
        job.cancel()
        return "cancelling after the current image..."

    # ---- review -------------------------------------------------------------------
    def queue(self, session: Session) -> list[list]:
        """The review queue rows, most doubtful first."""
        items = self.images(session, create=False).queue()
        session.dataset_queue = [(d.file_name, d.index) for d in items]
        return [[n + 1, d.file_name, d.index + 1, d.category, d.doubt, "; ".join(d.reasons)]
                for n, d in enumerate(items)]

    def pick(self, session: Session, row: int) -> tuple[np.ndarray, str]:
        """Show queue row `row` (its object highlighted) and make it the one to decide."""
        if not 0 <= row < len(session.dataset_queue):
            raise UserError("Pick a row of the review queue.")
        name, index = session.dataset_queue[row]
        session.dataset_pick = (name, index)
        images = self.images(session, create=False)
        return self.show(session, images.index_of(name), highlight=index)

    def decide(self, session: Session, accept: bool) -> tuple[list[list], str]:
        """Accept or reject the picked proposal: (new queue rows, summary)."""
        if session.dataset_pick is None:
            raise UserError("Pick a proposal in the review queue first.")
        name, index = session.dataset_pick
        images = self.images(session, create=False)
        images.decide(name, index, accept)
        session.dataset_pick = None
        return self.queue(session), images.summary()

    def decide_image(self, session: Session, accept: bool) -> tuple[list[list], str]:
        """Accept or reject every proposal of the image shown."""
        images = self.images(session, create=False)
        images.decide_all(images.entry(session.dataset_index).name, accept)
        return self.queue(session), images.summary()

    # ---- export -------------------------------------------------------------------
    def export(self, session: Session, formats: list[str], which: str) -> str:
        """The set in `formats` as one zip (reviewed objects only unless `which` says all)."""
        if not formats:
            raise UserError("Choose at least one format.")
        engine = self.ctx.engine
        meta = ExportMeta(description="a set labelled in the app (SAM + CLIP proposals, reviewed by a person)",
                          models=engine.label, untrained=engine.untrained)
        path = self.images(session, create=False).export(parse_formats(formats), which == EXPORT_CHOICES[0], meta)
        return str(path)


def _resized(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if mask.shape == size:
        return mask
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size[1], size[0]), Image.NEAREST)) > 127


# ---------------------------------------------------------------------------- the panel
def build(sh: PanelHost) -> None:
    """Upload, strip, prev/next, the picture and its objects; apply to all; the review queue; export."""
    w = {}
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            w["upload"] = gr.File(label=f"Images or a zip (up to {serving.SET_MAX_IMAGES} images, "
                                        f"{serving.SET_DISK_MB} MB)", file_count="multiple",
                                  file_types=["image", ".zip"], elem_id="set-upload")
            w["summary"] = gr.Markdown("No set yet.", elem_id="set-summary")
            w["notes"] = gr.Markdown("", elem_id="set-notes")
            w["phrase"] = gr.Textbox(label="Apply a phrase", placeholder="dogs", elem_id="set-phrase")
            w["vocab"] = gr.Textbox(label="... and/or a vocabulary", placeholder="cat, dog, sofa", elem_id="set-vocab")
            w["examples"] = gr.Checkbox(False, label="... and/or objects like the reviewed ones (examples)",
                                        elem_id="set-examples")
            with gr.Row():
                w["apply"] = gr.Button("Apply to all", variant="primary", elem_id="set-apply")
                w["cancel"] = gr.Button("Cancel", elem_id="set-cancel")
            w["progress"] = gr.Markdown("", elem_id="set-progress")
            w["formats"] = gr.CheckboxGroup([f for f in WRITERS], value=["coco", "yolo"], label="Export formats",
                                            elem_id="set-formats")
            w["which"] = gr.Radio(EXPORT_CHOICES, value=EXPORT_CHOICES[0], label="Objects", elem_id="set-which")
            w["export"] = gr.Button("Export the set", elem_id="set-export")
            w["file"] = gr.File(label="Dataset (zip)", interactive=False, elem_id="set-file")
        with gr.Column(scale=2):
            w["strip"] = gr.Gallery(label="The set (select an image)", columns=6, height=230, allow_preview=False,
                                    elem_id="set-strip")
            with gr.Row():
                w["prev"] = gr.Button("← Previous", size="sm", elem_id="set-prev")
                w["next"] = gr.Button("Next →", size="sm", elem_id="set-next")
            w["picture"] = gr.Image(label="Image and its objects", interactive=False, height=420, buttons=[],
                                    elem_id="set-picture")
            w["objects"] = gr.Markdown("", elem_id="set-objects")
            with gr.Row():
                w["refresh"] = gr.Button("Review queue (most doubtful first)", size="sm", elem_id="set-queue-btn")
                w["accept"] = gr.Button("Accept", size="sm", variant="primary", elem_id="set-accept")
                w["reject"] = gr.Button("Reject", size="sm", elem_id="set-reject")
                w["accept_img"] = gr.Button("Accept all on this image", size="sm", elem_id="set-accept-image")
            w["queue"] = gr.Dataframe(headers=QUEUE_HEADERS, interactive=False, wrap=True, elem_id="set-queue")
    w["timer"] = gr.Timer(1.0, active=False)
    _wire(sh, w)


def _wire(sh: PanelHost, w: dict) -> None:
    cb, q = sh.cb.dataset, sh.q

    def on_upload(sess: Session, paths, request: gr.Request):
        sh.cb.files.register(sess, request.session_hash)
        strip, summary, notes = cb.upload(sess, paths)
        return strip, summary, notes, None, gr.skip()

    def on_pick_image(sess: Session, evt: gr.SelectData):
        return (*cb.show(sess, evt.index), gr.skip())

    def on_step(delta):
        return lambda sess: (*cb.step(sess, delta), gr.skip())

    def on_apply(sess: Session, phrase: str, vocab: str, examples: bool):
        return cb.apply(sess, phrase, vocab, examples), gr.Timer(active=True), gr.skip()

    def on_tick(sess: Session):
        line, running = cb.progress(sess)
        summary = sess.dataset.summary() if sess.dataset is not None else "No set yet."
        shown = (gr.skip(), gr.skip())
        if not running and sess.dataset is not None and sess.dataset.entries:   # the last tick: show the results
            shown = cb.show(sess, sess.dataset_index)
        return line, cb.strip(sess), summary, *shown, gr.Timer(active=running), gr.skip()

    def on_row(sess: Session, evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else int(evt.index)
        return (*cb.pick(sess, int(row)), gr.skip())

    def on_decide(accept: bool):
        return lambda sess: (*cb.decide(sess, accept), cb.strip(sess), gr.skip())

    def on_accept_image(sess: Session):
        return (*cb.decide_image(sess, True), cb.strip(sess), gr.skip())

    light = {**q["light"], **QUIET}
    w["upload"].upload(sh.guard(on_upload), [sh.session, w["upload"]],
                       [w["strip"], w["summary"], w["notes"], w["upload"], sh.status], **q["exports"])
    w["strip"].select(sh.guard(on_pick_image), [sh.session], [w["picture"], w["objects"], sh.status], **light)
    w["prev"].click(sh.guard(on_step(-1)), [sh.session], [w["picture"], w["objects"], sh.status], **light)
    w["next"].click(sh.guard(on_step(1)), [sh.session], [w["picture"], w["objects"], sh.status], **light)
    w["apply"].click(sh.guard(on_apply), [sh.session, w["phrase"], w["vocab"], w["examples"]],
                     [w["progress"], w["timer"], sh.status], **light)
    w["cancel"].click(sh.guard(lambda s: (cb.cancel(s), gr.skip())), [sh.session], [w["progress"], sh.status], **light)
    w["timer"].tick(sh.guard(on_tick), [sh.session], [w["progress"], w["strip"], w["summary"], w["picture"],
                                                      w["objects"], w["timer"], sh.status], **light)
    # the queue reads every image's labels: the exports group, not the light one
    w["refresh"].click(sh.guard(lambda s: (cb.queue(s), gr.skip())), [sh.session], [w["queue"], sh.status],
                       **q["exports"])
    w["queue"].select(sh.guard(on_row), [sh.session], [w["picture"], w["objects"], sh.status], **light)
    decided = [w["queue"], w["summary"], w["strip"], sh.status]
    w["accept"].click(sh.guard(on_decide(True)), [sh.session], decided, **light)
    w["reject"].click(sh.guard(on_decide(False)), [sh.session], decided, **light)
    w["accept_img"].click(sh.guard(on_accept_image), [sh.session], decided, **light)
    w["export"].click(sh.guard(lambda s, f, which: (cb.export(s, f, which), gr.skip())),
                      [sh.session, w["formats"], w["which"]], [w["file"], sh.status], **q["exports"])
