"""What every panel's callbacks share: the session's model and its SAM embedding, checks
of keys and text, and the canvas messages (JSON) that carry pictures and masks to the
browser canvas (`demo/canvas.py`).

Coordinates from the canvas are pixels of the working image; masks go back at display
size (`maskdata.encode_mask`: run lengths or packed bits).
"""
from __future__ import annotations

import json
import time

import numpy as np

from core.find.vocab import parse_vocabulary
from core.refer import GroundingSettings
from core.sam.automask import AutoMaskSettings
from core.views import mask_to_box
from demo import maskdata
from demo import settings as serving
from demo.context import AppContext
from demo.outputs import SegmentOut
from demo.session_files import SessionFiles
from demo.state import Session, Stale, UserError


class Workspace:
    """The shared context of the panels: the models (`AppContext`), the session files, helpers."""

    def __init__(self, ctx: AppContext, files: SessionFiles):
        self.ctx = ctx
        self.files = files

    @property
    def engine(self):
        return self.ctx.require_models()

    def automask_settings(self) -> AutoMaskSettings:
        return self.ctx.automask_settings()

    def model(self, session: Session) -> str:
        """The SAM this session uses: its own choice, else the app's default."""
        return session.sam_model or self.ctx.engine.settings.sam

    def segmenter(self, session: Session):
        """The shared segmenter of the session's SAM (each model loaded once per process)."""
        return self.engine.segmenter_for(self.model(session))

    def embedding(self, session: Session):
        """SAM's embedding of the session's image, from the shared cache (encoded when
        missing). The session keeps only the key, never the tensor."""
        image, key = session.require_image(), session.image_key
        seg = self.segmenter(session)
        emb = seg.cached(key)
        if emb is None:
            start = time.perf_counter()
            emb = seg.set_image(image)
            self.ctx.record_encode(time.perf_counter() - start, self.model(session))
        if session.image_key == key:   # the person may have chosen another image meanwhile:
            session.embedding = emb.key   # then this one is not the session's to keep
        return emb

    def automatic_masks(self, session: Session, on_partial=None):
        """SAM's automatic masks of the session's image (core.sam.automask.AutoMasks), from the
        engine's shared per-image analysis (Everything, Refer and "add all" compute it once).
        on_partial: `core.sam.automask.PartialMasks`, the masks so far when computed now."""
        self.embedding(session)   # encoded first (its time is measured for the estimates)
        return self.engine.automatic_masks(session.image, self.automask_settings(), self.model(session),
                                           on_partial)

    def grounding_settings(self):
        """core.refer.GroundingSettings over the app's automatic-mask settings."""
        return GroundingSettings(automask=self.automask_settings())

    def grounding_candidates(self, session: Session):
        """The image's grounding candidates with CLIP features, from the shared analysis."""
        self.embedding(session)
        return self.engine.grounding_candidates(session.image, self.grounding_settings(), self.model(session))

    @staticmethod
    def vocabulary(text: str):
        """The labelling vocabulary a person typed (blank: COCO-panoptic; a comma list, a
        sentence's nouns), as core.find.vocab.Vocabulary; UserError with the reason."""
        text = (text or "").strip()
        if len(text) > 20 * serving.MAX_TEXT_CHARS:
            raise UserError(f"The vocabulary is {len(text)} characters long; the limit is "
                            f"{20 * serving.MAX_TEXT_CHARS}.")
        try:
            return parse_vocabulary(text or None)
        except ValueError as exc:
            raise UserError(str(exc)) from exc

    @staticmethod
    def check_text(text: str, what: str) -> str:
        """`text` stripped; UserError when it is longer than the models are given."""
        text = (text or "").strip()
        if len(text) > serving.MAX_TEXT_CHARS:
            raise UserError(f"The {what} is {len(text)} characters long; the limit is "
                            f"{serving.MAX_TEXT_CHARS}.")
        return text

    @staticmethod
    def check_key(session: Session, key) -> None:
        """Raise `Stale` unless `key` names the session's current image."""
        if not key or key != session.image_key:
            raise Stale(f"dropped: a result for another image ({str(key)[:8]})")

    def display_size(self, session: Session) -> tuple[int, int]:
        return maskdata.display_size(session.image.shape[:2], self.ctx.settings.display_max_side)

    def display_scale(self, session: Session) -> float:
        return self.display_size(session)[1] / session.image.shape[1]

    def mask_payload(self, mask: np.ndarray, display: tuple[int, int], **extra) -> dict:
        return {**maskdata.encode_mask(maskdata.to_display(mask, display)), **extra}

    def canvas_message(self, session: Session, phase: str = "ready", **extra) -> str:
        """The canvas message for the session's image: its URL and sizes, the phase
        ("encoding" with an estimate, or "ready"), plus `extra` fields (auto, selection)."""
        h, w = session.image.shape[:2]
        message = {"seq": time.monotonic_ns(), "key": session.image_key, "name": session.image_name,
                   "src": self.ctx.display_url(session.image_key, session.image,
                                               self.ctx.settings.display_max_side),
                   "size": [h, w], "display": list(self.display_size(session)),
                   "original": list(session.original_size), "phase": phase,
                   "model": self.model(session),
                   "estimate_ms": round(self.ctx.encode_estimate(self.model(session)) * 1000), **extra}
        return json.dumps(message, separators=(",", ":"))

    def picture_message(self, key: str, name: str, image: np.ndarray, mask: np.ndarray | None = None,
                        **extra) -> str:
        """A canvas message showing `image` (at most display_max_side) with `mask` selected."""
        max_side = self.ctx.settings.display_max_side
        display = maskdata.display_size(image.shape[:2], max_side)
        message = {"seq": time.monotonic_ns(), "key": key, "name": name,
                   "src": self.ctx.display_url(key, image, max_side),
                   "size": list(image.shape[:2]), "display": list(display),
                   "original": list(image.shape[:2]), "phase": "ready", **extra}
        if mask is not None:
            message["selection"] = self.mask_payload(mask, display, source="search")
        return json.dumps(message, separators=(",", ":"))

    def selection_info(self, session: Session) -> str:
        """Markdown describing the image and the selected object (box, area, score, prompts)."""
        if session.image is None:
            return "No image yet: upload one or pick an example."
        h, w = session.image.shape[:2]
        oh, ow = session.original_size
        shown = f"{ow}x{oh}" + (f", worked on at {w}x{h}" if (oh, ow) != (h, w) else "")
        points, labels = session.points()
        prompts = (f"{int((labels == 1).sum())} positive, {int((labels == 0).sum())} negative point(s)"
                   + (", 1 box" if session.box() is not None else ""))
        head = f"**{session.image_name}** ({shown}) · prompts: {prompts}"
        if not session.encoded():
            head += " · encoding..."
        sel = session.selection
        if sel is None or not sel.mask.any():
            return head + "\n\nNo object selected."
        fy, fx = oh / h, ow / w
        x1, y1, x2, y2 = (float(v) for v in mask_to_box(sel.mask))
        area = float(sel.mask.sum()) * fx * fy
        detail = (f"selected object: box ({x1 * fx:.0f}, {y1 * fy:.0f}, {x2 * fx:.0f}, {y2 * fy:.0f}), "
                  f"{area:.0f} px ({sel.mask.mean():.1%} of the image), {sel.describe()}")
        return head + "\n\n" + detail

    def segment_out(self, session: Session, status: str, canvas: str | None = None) -> SegmentOut:
        return SegmentOut(session, canvas, self.selection_info(session), status)
