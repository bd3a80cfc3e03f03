"""Refer: a referring expression ("the cat on the left") grounded in the session's image."""
from __future__ import annotations

import sys
import threading
import time

import gradio as gr
import numpy as np

from core import refer
from demo import rendering
from demo import settings as serving
from demo.outputs import TILE_SIDE, Progress, ms_since, no_progress, plural
from demo.state import Selection, Session, UserError
from demo.wiring import QUIET, PanelHost, progress_adapter
from demo.workspace import Workspace


class ReferCallbacks:
    """The Refer panel's work."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.ctx = ws.ctx

    def parse_expression(self, text: str) -> str:
        """What the app understood of a referring expression, as Markdown (fast: spaCy only)."""
        text = self.ws.check_text(text, "referring expression")
        if not text:
            raise UserError("Type a referring expression, e.g. 'the cat on the left'.")
        return self.expression_markdown(refer.parse(text))

    def refer(self, session: Session, text: str, progress: Progress = no_progress) -> tuple:
        """Ground a referring expression in the session's image; the chosen object becomes
        the selection and is drawn on the canvas. Returns (SegmentOut, candidate tiles)."""
        image = session.require_image()
        key = session.image_key
        text = self.ws.check_text(text, "referring expression")
        if not text:
            raise UserError("Type a referring expression, e.g. 'the cat on the left'.")
        settings = self.ws.grounding_settings()
        progress(0.1, "scoring candidate objects against the text")
        start = time.perf_counter()
        grounding = self.ground(session, refer.parse(text), settings)
        took = ms_since(start)
        self.ws.check_key(session, key)
        tiles = []
        for i in range(min(8, len(grounding))):
            caption = (f"#{i + 1} score {float(grounding.scores[i]):.3f} "
                       f"(local {float(grounding.local_scores[i]):.2f}, "
                       f"global {float(grounding.global_scores[i]):.2f})")
            if i == grounding.chosen:
                caption += " CHOSEN"
            tiles.append((rendering.thumbnail(rendering.overlay_mask(image, grounding.masks[i]),
                                              TILE_SIDE), caption))
        mask = np.asarray(grounding.mask, dtype=bool)
        session.prompts, session.candidates = [], None
        session.selection = Selection("refer", mask, int(grounding.chosen),
                                      float(grounding.scores[grounding.chosen]), len(grounding))
        top = min(settings.top_k, len(grounding))
        how = (f"the direction '{grounding.expression.direction}' chose candidate "
               f"#{grounding.chosen + 1} among the top {top}"
               if grounding.direction_applied and top > 1 else
               "the only candidate" if len(grounding) == 1 else "the best score chose")
        status = (f"Grounded '{text.strip()}' in {took} among {plural(len(grounding), 'candidate')}: {how}. "
                  "It is drawn on the canvas and is now the selected object (Compare and Search use it).")
        canvas = self.ws.canvas_message(session, selection=self.ws.mask_payload(
            mask, self.ws.display_size(session), source="refer"))
        return self.ws.segment_out(session, status, canvas), tiles

    def ground(self, session: Session, expression, settings) -> "refer.Grounding":
        """Stage 1 from the shared per-image analysis (candidates and their CLIP features:
        computed once per image, also ahead of time by `prepare`), then stage 2 for this
        sentence (its text features only)."""
        self.ws.embedding(session)   # encoded first (its time is measured for the estimates)
        return self.ws.engine.ground(session.image, expression, settings, self.ws.model(session))

    def prepare(self, session: Session) -> str:
        """Start the image's analysis ahead of a sentence (the Refer tab was opened, the box
        focused): returns at once; the work runs in the background and yields to clicks."""
        if session.image is None or not session.encoded() or not self.ctx.loaded.is_set():
            return ""
        image, settings, model = session.image, self.ws.grounding_settings(), self.ws.model(session)
        engine = self.ws.engine

        def work() -> None:
            try:
                engine.grounding_candidates(image, settings, model)
            except Exception as exc:  # shown when the person asks; here only logged
                print(f"refer preparation failed: {exc}", file=sys.stderr)

        threading.Thread(target=work, name="samclip-prepare", daemon=True).start()
        return "Preparing this image's objects for referring..."

    def prepare_if_open(self, session: Session) -> str:
        """`prepare` when the Refer tab is the one open (called after every image load, so a
        new image is prepared while the person looks at Refer); "" otherwise."""
        return self.prepare(session) if session.open_tab == "refer" else ""

    @staticmethod
    def expression_markdown(expression) -> str:
        noun = expression.noun or "(none found)"
        if expression.noun and not refer.is_known_word(expression.noun):
            noun += " (not an English word the app knows: check the spelling)"
        parts = [f"**noun:** {noun}",
                 f"**direction:** {expression.direction or '(none)'}"]
        if getattr(expression, "ordinal", 1) and expression.ordinal != 1:
            parts.append(f"**ordinal:** {expression.ordinal}")
        if getattr(expression, "corrections", ()):
            parts.append("**typos fixed:** " + ", ".join(f"{a} → {b}" for a, b in expression.corrections))
        return " · ".join(parts)


# ---------------------------------------------------------------------------- the panel
def build(sh: PanelHost, tab=None) -> None:
    """The expression box, what was understood, the top candidates; the chosen object is
    drawn on the canvas and becomes the selection. Opening `tab` (or focusing the box)
    starts the image's analysis in the background."""
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            refer_text = gr.Textbox(label="Referring expression", placeholder="the cat on the left",
                                    max_length=10 * serving.MAX_TEXT_CHARS, elem_id="refer-text")
            refer_btn = gr.Button("Find it", variant="primary", elem_id="refer-btn")
            if sh.queries.get("refer"):
                gr.Examples([[q["text"]] for q in sh.queries["refer"]], inputs=[refer_text],
                            label="Example expressions (pick the matching example image)")
            parsed = gr.Markdown("", elem_id="refer-parsed")
        with gr.Column(scale=2):
            gr.Markdown("The chosen object is drawn on the canvas above and becomes the selected object.")
            refer_candidates = gr.Gallery(label="Top candidates", columns=4, height=220, allow_preview=False,
                                          elem_id="refer-candidates", elem_classes=["cols4"])

    def on_parse(text: str):
        """What was understood; an empty or too long expression clears the last one and says why."""
        try:
            return sh.cb.refer.parse_expression(text), "Parsed; grounding it in the image..."
        except UserError as exc:
            gr.Warning(str(exc))
            return "", f"⚠️ {exc}"

    def on_refer(sess: Session, text: str, request: gr.Request, progress=gr.Progress()):
        if not text or not text.strip():
            return {sh.status: gr.skip()}   # on_parse already said why
        out, tiles = sh.cb.refer.refer(sess, text, progress_adapter(progress))
        return (*sh.segment_values(out, request), tiles)

    def on_prepare(sess: Session):
        return sh.cb.refer.prepare(sess) or gr.skip()

    for intent in ([tab.select] if tab is not None else []) + [refer_text.focus]:
        intent(sh.guard(on_prepare), [sh.session], [sh.status], **QUIET, **sh.q["light"])
    for trigger in (refer_btn.click, refer_text.submit):
        parse = trigger(sh.guard(on_parse), [refer_text], [parsed, sh.status], **sh.q["click"])
        sh.after_segment(parse.then(sh.heavy(on_refer, True), [sh.session, refer_text],
                                    sh.seg_outputs + [refer_candidates], **sh.q["refer"]))
