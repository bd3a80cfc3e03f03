"""UI callbacks: unpack widget values, call the core engine, format the results.

No gradio import here, so the callbacks are testable without a browser. Each method takes
the session's `Session` plus plain values and returns plain values: `SegmentOut` for the
Segment area (session, canvas message, info Markdown, status line, export files), lists of
(image, caption) for galleries, Markdown strings. They raise `UserError` (or a core
ValueError) for anything the person can fix; `demo.layout` turns every exception into a
readable message.

The canvas lives in the browser (`demo/canvas.py`): it gets the picture once, as a URL, and
afterwards only JSON "canvas messages" (`canvas_message`) with compact mask data
(`maskdata.encode_mask` at display size: run lengths or packed bits). Every request from it carries the image's key
(`Session.image_key`); a request about an image that is no longer the session's is
dropped (`Stale`). Coordinates from the canvas are pixels of the working image.
"""
from __future__ import annotations

import json
import secrets
import shutil
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from core import refer
from core.sam.automask import AutoMaskSettings
from core.gallery.browse import hit_thumbnail
from core.gallery.build import FoundObject, list_images, records_for
from core.gallery.examples import combine, gallery_from_arrays
from core.io.images import load_image
from core.io.masks import box_to_mask, rle_to_mask
from core.sam.segmenter import image_key
from core.views import VIEWS, mask_to_box, render_view
from demo import maskdata, rendering
from demo import settings as serving
from demo.biggallery import hit_picture, placeholder, source_and_mask, source_problem
from demo.context import AppContext
from demo.state import Prompt, Selection, Session, UserError

Progress = Callable[[float, str], None]
#: Tiles of result galleries are at most this big.
TILE_SIDE = 192
#: A click in 'Everything' mode this close (display pixels) to a mask picks it.
PICK_RADIUS_DISPLAY = 8.0


def _no_progress(fraction: float, note: str) -> None:
    pass


def metric_order(metric: str) -> str:
    """How scores of `metric` read: "higher is closer" (cosine) or "lower is closer" (l2)."""
    return "higher is closer" if metric == "cosine" else "lower is closer"


def _ms(start: float) -> str:
    return f"{(time.perf_counter() - start) * 1000:.0f} ms"


def _put(path: Path, data: bytes | str) -> str:
    """Write `path` whole (a download being served never sees half a file); its path."""
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    tmp.replace(path)
    return str(path)


class Stale(Exception):
    """A request about an image that is no longer the session's current one: dropped."""


@dataclass
class Exports:
    """Files the download buttons offer (None: not available, `why` says why)."""

    cutout: str | None = None      # RGBA PNG of the selected object, cropped to its box
    mask_png: str | None = None    # the selected mask, 8-bit PNG at the original size
    mask_rle: str | None = None    # the selected mask as one COCO annotation (RLE) JSON
    coco: str | None = None        # all objects of the image as one COCO JSON document
    why: str = "Select an object first."


@dataclass
class SegmentOut:
    """What a Segment-area callback gives the UI. canvas: a canvas message (JSON) or None
    when the canvas needs nothing new."""

    session: Session
    canvas: str | None
    info: str
    status: str
    exports: Exports = field(default_factory=Exports)


@dataclass
class PageOut:
    """One page of the large gallery for the UI: result tiles, the status, the results line
    ("Results 21-40 of 1,234 objects ..."), whether Previous / Next lead anywhere."""

    session: Session
    tiles: list
    status: str
    line: str
    has_prev: bool
    has_next: bool


class Callbacks:
    """The app's callbacks, bound to the shared `AppContext` (models, example gallery)."""

    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        #: Folders uploads arrive in (Gradio's upload folder; set by demo.layout).
        self.upload_dirs: list[str] = []
        # session hash -> that session's Session, so closing the page frees it at once
        self._live: dict[str, Session] = {}
        # every session with an image or files, by id, not kept alive (Gradio owns them)
        self._sessions: weakref.WeakValueDictionary[int, Session] = weakref.WeakValueDictionary()
        self._live_lock = threading.Lock()

    # ================================================================ session lifetime
    def register(self, session: Session, session_hash: str | None) -> None:
        """Remember which page `session` belongs to (for `end_session_of` on page close)."""
        if not isinstance(session, Session):
            return
        with self._live_lock:
            self._sessions[id(session)] = session
            if session_hash:
                self._live[session_hash] = session

    def live_sessions(self) -> int:
        with self._live_lock:
            return len(self._live)

    def end_session_of(self, session_hash: str | None) -> None:
        """The page `session_hash` was closed: free its session now."""
        with self._live_lock:
            session = self._live.pop(session_hash, None) if session_hash else None
        if session is not None:
            self.end_session(session)

    def in_use(self) -> set[str]:
        """Files sessions still hold (download folders, uploads, canvas pictures): never
        deleted by a sweep, nor by another session's end."""
        with self._live_lock:
            sessions = list(self._sessions.values())
        held = set()
        for s in sessions:
            held.update(p for p in (s.files_dir, s.source) if p)
            if s.image_key:
                held.add(str(self.ctx.display_path(s.image_key)))
        return held

    def files_dir(self, session: Session) -> Path:
        """The session's own folder for downloads (made on first use, under the app's
        session-files folder; the name is unguessable, as it is served in place)."""
        with self._live_lock:   # made and recorded at once: the orphan sweep never sees it bare
            if not session.files_dir:
                folder = self.ctx.files_root / f"session_{secrets.token_hex(16)}"
                folder.mkdir(parents=True)
                session.files_dir = str(folder)
            self._sessions[id(session)] = session
        return Path(session.files_dir)

    def sweep_session_folders(self) -> int:
        """Delete session folders no live session owns (e.g. its session was dropped without
        `end_session`); returns how many."""
        root = self.ctx.files_root
        found = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        held = self.in_use()   # after listing: a folder is recorded before anyone can list it
        orphans = [p for p in found if str(p) not in held]
        for folder in orphans:
            shutil.rmtree(folder, ignore_errors=True)
        return len(orphans)

    def is_upload(self, path: str) -> bool:
        if not path:
            return False
        resolved = Path(path).resolve()
        return any(d and resolved.is_relative_to(Path(d).resolve()) for d in self.upload_dirs)

    def forget_upload(self, path: str) -> None:
        """Delete an uploaded file (and its folder when empty)."""
        if not self.is_upload(path):
            return
        file = Path(path)
        file.unlink(missing_ok=True)
        try:
            file.parent.rmdir()
        except OSError:
            pass

    def release(self, upload: str = "", key: str = "") -> None:
        """Delete the upload `upload` and the canvas picture of image `key` unless a session
        still holds them (uploads and pictures are named by content: two people may share one)."""
        held = self.in_use()
        if upload and upload not in held:
            self.forget_upload(upload)
        if key and str(self.ctx.display_path(key)) not in held:
            self.ctx.forget_display(key)

    def end_session(self, session) -> None:
        """A session ended (time to live passed, or its page was closed): delete its files
        (downloads folder, its upload and picture unless others hold them) and drop its
        arrays. Safe to call twice."""
        if not isinstance(session, Session):
            return
        with self._live_lock:
            for key, value in list(self._live.items()):
                if value is session:
                    del self._live[key]
            self._sessions.pop(id(session), None)
            folder, upload, key = session.files_dir, session.source, session.image_key
            session.files_dir = session.source = session.image_key = ""
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
        self.release(upload, key)
        session.image = session.embedding = None
        session.auto = session.candidates = session.selection = None
        session.user_images, session.user_embeddings, session.user_records = {}, {}, []
        session.hits, session.page_query = [], None

    # ================================================================ helpers
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

    def _embedding(self, session: Session):
        """SAM's embedding of the session's image, from the shared cache (encoded when
        missing). The session keeps only the key, never the tensor."""
        image = session.require_image()
        seg = self.segmenter(session)
        emb = seg.cached(session.image_key)
        if emb is None:
            start = time.perf_counter()
            emb = seg.set_image(image)
            self.ctx.record_encode(time.perf_counter() - start, self.model(session))
        session.embedding = emb.key
        return emb

    @staticmethod
    def check_text(text: str, what: str) -> str:
        """`text` stripped; UserError when it is longer than the models are given."""
        text = (text or "").strip()
        if len(text) > serving.MAX_TEXT_CHARS:
            raise UserError(f"The {what} is {len(text)} characters long; the limit is "
                            f"{serving.MAX_TEXT_CHARS}.")
        return text

    def set_model(self, session: Session, name: str) -> SegmentOut:
        """Switch this session (only) to SAM `name`; its image is encoded again with it."""
        name = self.ctx.sam_name(name)
        if name == self.model(session):
            raise Stale("same model")
        session.sam_model = name
        if session.image is None:
            return SegmentOut(session, None, self.selection_info(session),
                              f"SAM model for your session: {self.ctx.model_line(name)}.")
        session.embedding = None
        session.prompts, session.candidates, session.auto, session.selection = [], None, None, None
        emb = self.engine.segmenter_for(name).cached(session.image_key)
        if emb is not None:
            session.embedding = emb.key
            return self.segment_out(session, f"Now using {self.ctx.model_line(name)}; this image "
                                             "was encoded with it already.", self.canvas_message(session))
        return self.segment_out(session, f"Now using {self.ctx.model_line(name)}; encoding the "
                                         f"image with it (about {self.ctx.encode_estimate(name):.1f} s)...",
                                self.canvas_message(session, phase="encoding"))

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
        if session.embedding is None:
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

    def write_exports(self, session: Session) -> Exports:
        """Write the selected object (cut-out, mask PNG, mask RLE) and all objects (COCO)
        into the session's folder, at the original size; file names from the image's name."""
        if session.image is None:
            return Exports(why="Upload an image or pick an example first.")
        folder = self.files_dir(session)
        stem = Path(session.image_name).stem or "image"
        size = session.original_size
        out = Exports(why="")
        objects, extras = [], []
        if session.auto is not None:
            objects += [maskdata.to_size(m, size) for m in session.auto.masks]
            extras += [{"score": float(s), "source": "automatic"} for s in session.auto.scores]
        sel = session.selection
        if sel is not None and sel.mask.any():
            full = maskdata.to_size(sel.mask, size)
            if sel.source != "auto":
                objects.append(full)
                extras.append({"score": float(sel.score), "source": sel.source, "selected": True})
            else:
                extras[sel.index]["selected"] = True
            original = self.original_pixels(session)
            ann = maskdata.coco_annotation(full, 1, score=float(sel.score), source=sel.source)
            out.cutout = _put(folder / f"{stem}_cutout.png", maskdata.cutout_png(original, full))
            out.mask_png = _put(folder / f"{stem}_mask.png", maskdata.mask_png(full))
            out.mask_rle = _put(folder / f"{stem}_mask.rle.json", json.dumps(
                {"image": session.image_name, "height": size[0], "width": size[1], **ann,
                 "note": "COCO compressed RLE; bbox is COCO [x, y, width, height] in pixels of "
                         "the original"}))
        else:
            out.why = "Select an object first (click it, or pick one after 'Everything')."
        if objects:
            note = ("automatic masks ('Everything') and the selected object" if session.auto is not None
                    else "the selected object only: press 'Everything' to include all objects")
            out.coco = _put(folder / f"{stem}_objects.coco.json", json.dumps(
                maskdata.coco_document(session.image_name, size, objects, extras, note)))
        return out

    def original_pixels(self, session: Session) -> np.ndarray:
        """The image at its original size (re-read from its file when it was downscaled)."""
        if tuple(session.image.shape[:2]) == tuple(session.original_size):
            return session.image
        oh, ow = session.original_size
        if session.source and Path(session.source).is_file() and oh * ow <= maskdata.BIG_DECODE_PIXELS:
            try:   # re-read only moderate originals; bigger ones: the working image scaled up
                full = load_image(session.source, max_pixels=maskdata.MAX_UPLOAD_PIXELS)
                if full.shape[:2] == tuple(session.original_size):
                    return full
            except ValueError:
                pass
        oh, ow = session.original_size
        return np.asarray(Image.fromarray(session.image).resize((ow, oh), Image.Resampling.BILINEAR))

    def segment_out(self, session: Session, status: str, canvas: str | None = None) -> SegmentOut:
        return SegmentOut(session, canvas, self.selection_info(session), status,
                          self.write_exports(session))

    # ================================================================ loading images
    def example_paths(self) -> list[Path]:
        return list_images(self.ctx.settings.examples_dir)

    def begin_load(self, session: Session, path, name: str) -> SegmentOut:
        """Read and check the file, make it the session's image (prompts, masks and the
        selection start over) and show it; SAM's embedding follows in `finish_load`."""
        if self.ctx.loaded.is_set():
            self.ctx.require_models()          # missing weights: say so before showing anything
        session.load_ticket += 1
        ticket = session.load_ticket
        try:
            opened = maskdata.open_upload(path, name, self.ctx.settings.work_max_side)
        except Exception:
            self.release(str(path or ""))   # an upload the app cannot read is of no use
            raise
        if ticket != session.load_ticket:
            raise Stale("dropped: another image was chosen meanwhile")
        key = image_key(opened.image)
        previous, old_key = session.source, session.image_key
        with self._live_lock:
            session.reset_image(opened.image, key, name, opened.original_size, str(path))
            self._sessions[id(session)] = session
        self.release(previous, old_key)   # the old upload and picture, unless still held
        if self.ctx.loaded.is_set() and not self.ctx.load_error:
            emb = self.segmenter(session).cached(key)
            session.embedding = emb.key if emb is not None else None
        h, w = opened.image.shape[:2]
        note = (f" (downscaled from {opened.original_size[1]}x{opened.original_size[0]}; exports "
                f"stay at the original size)" if opened.downscaled else "")
        if session.embedding is not None:
            return self.segment_out(session, f"Loaded {name} ({w}x{h}){note}; its SAM embedding was "
                                             "cached. Click on an object.", self.canvas_message(session))
        estimate = self.ctx.encode_estimate(self.model(session))
        return self.segment_out(
            session, f"Loaded {name} ({w}x{h}){note}; encoding it with SAM (about {estimate:.1f} s)...",
            self.canvas_message(session, phase="encoding"))

    def finish_load(self, session: Session, key: str) -> SegmentOut:
        """Compute SAM's embedding of the image `key` (once per image, cached)."""
        self.check_key(session, key)
        if session.embedding is not None:
            raise Stale("already encoded")
        start = time.perf_counter()
        self._embedding(session)
        self.check_key(session, key)   # another image may have been chosen while encoding
        h, w = session.image.shape[:2]
        took = (time.perf_counter() - start) * 1000
        return self.segment_out(session, f"Loaded {session.image_name} ({w}x{h}); SAM embedding "
                                         f"ready in {took:.0f} ms. Click on an object.",
                                self.canvas_message(session, encode_ms=round(took, 1)))

    def load_all(self, session: Session, path, name: str) -> SegmentOut:
        """`begin_load` + `finish_load` in one call (tests, scripts)."""
        first = self.begin_load(session, path, name)
        if session.embedding is not None:
            return first
        return self.finish_load(session, session.image_key)

    def example(self, index: int) -> tuple[Path, str]:
        paths = self.example_paths()
        if not isinstance(index, int) or not 0 <= index < len(paths):
            raise UserError(f"No example number {index!r}.")
        return paths[index], paths[index].name

    def load_example(self, session: Session, index: int) -> SegmentOut:
        path, name = self.example(index)
        return self.load_all(session, path, name)

    def upload_path(self, path, allowed_dirs: list[str]) -> str:
        """`path` from the canvas's upload, checked to lie in one of `allowed_dirs`
        (Gradio's upload folder): the browser must not name arbitrary server files."""
        if not path or not isinstance(path, str):
            raise UserError("The upload did not arrive; please try again.")
        resolved = Path(path).resolve()
        for folder in allowed_dirs:
            if folder and resolved.is_relative_to(Path(folder).resolve()):
                return str(resolved)
        raise UserError("That file is not an upload of this session.")

    # ================================================================ prompts (canvas)
    @staticmethod
    def parse_prompts(payload: dict, size: tuple[int, int]) -> list[Prompt]:
        """Prompts from the canvas: {"points": [[x, y, label], ...], "box": [x1, y1, x2, y2] | null},
        working-image pixels; clipped to the image."""
        h, w = size
        prompts = []
        for item in payload.get("points") or []:
            if len(item) != 3:
                raise UserError("A point needs x, y and a label.")
            x, y, label = float(item[0]), float(item[1]), int(item[2])
            if not (np.isfinite(x) and np.isfinite(y)) or label not in (0, 1):
                raise UserError("A point needs finite x, y and a label 0 or 1.")
            prompts.append(Prompt("point", min(max(x, 0.0), w - 1.0), min(max(y, 0.0), h - 1.0),
                                  label=label))
        box = payload.get("box")
        if box:
            x1, y1, x2, y2 = (float(v) for v in box)
            x1, x2 = sorted((min(max(x1, 0.0), w), min(max(x2, 0.0), w)))
            y1, y2 = sorted((min(max(y1, 0.0), h), min(max(y2, 0.0), h)))
            if x2 - x1 < 2 or y2 - y1 < 2:
                raise UserError("That box is too small: drag across the object.")
            prompts.append(Prompt("box", x1, y1, x2, y2))
        return prompts

    def preview(self, payload: dict) -> dict:
        """The canvas's fast path (a server function, no session): masks for prompts on the
        image `payload["key"]`, whose SAM embedding must be in the shared cache.

        payload: {"key", "points": [[x, y, label]...], "box": [x1, y1, x2, y2] | null,
        "best_only": bool}. Returns {"key", "ok", "masks": [{"runs", "score"}], "ms"} at
        display size, or {"key", "ok": False, "reason"}."""
        start = time.perf_counter()
        key = payload.get("key") if isinstance(payload, dict) else None
        if not self.ctx.loaded.is_set() or self.ctx.load_error:
            return {"key": key, "ok": False, "reason": "models not ready"}
        model = payload.get("model") if isinstance(payload, dict) else None
        try:
            seg = self.ctx.engine.segmenter_for(self.ctx.sam_name(model) if model else None)
        except UserError as exc:
            return {"key": key, "ok": False, "reason": str(exc)}
        emb = seg.cached(key) if isinstance(key, str) and key else None
        if emb is None:
            return {"key": key, "ok": False, "reason": "not encoded"}
        try:
            prompts = self.parse_prompts(payload, emb.original_size)
        except (UserError, TypeError, ValueError) as exc:
            return {"key": key, "ok": False, "reason": str(exc)}
        if not prompts:
            return {"key": key, "ok": True, "masks": [], "ms": 0}
        tmp = Session(prompts=prompts)
        points, labels = tmp.points()
        pred = seg.predict(emb, points if len(points) else None,
                                                 labels if len(labels) else None, tmp.box())
        display = maskdata.display_size(emb.original_size, self.ctx.settings.display_max_side)
        count = 1 if payload.get("best_only") else len(pred.masks)
        masks = [self.mask_payload(pred.masks[i], display, score=round(float(pred.scores[i]), 4))
                 for i in range(count)]
        return {"key": key, "ok": True, "masks": masks,
                "ms": round((time.perf_counter() - start) * 1000, 1)}

    def commit_prompts(self, session: Session, payload: dict) -> SegmentOut:
        """The canvas's prompts (and the candidate the person chose) become the session's:
        run SAM at full resolution, select the chosen candidate, write the exports."""
        self.check_key(session, payload.get("key"))
        version = payload.get("version")
        version = version if isinstance(version, int) else session.prompt_version
        if version < session.prompt_version:
            raise Stale("dropped: newer prompts were committed already")
        prompts = self.parse_prompts(payload, session.image.shape[:2])
        session.prompt_version = version
        session.prompts = prompts
        if not prompts:
            session.clear_prompts()
            return self.segment_out(session, "No prompts: click an object (right-click: "
                                             "background, drag: a box).")
        emb = self._embedding(session)
        self.check_key(session, payload.get("key"))
        if version < session.prompt_version:
            raise Stale("dropped: newer prompts were committed meanwhile")
        points, labels = session.points()
        start = time.perf_counter()
        pred = self.segmenter(session).predict(emb, points if len(points) else None,
                                             labels if len(labels) else None, session.box())
        chosen = payload.get("chosen", 0)
        chosen = chosen if isinstance(chosen, int) and 0 <= chosen < len(pred.masks) else 0
        if version < session.prompt_version or prompts is not session.prompts:
            raise Stale("dropped: newer prompts were committed meanwhile")
        session.candidates = pred
        session.selection = Selection("prompt", pred.masks[chosen], chosen,
                                      float(pred.scores[chosen]), len(pred.masks))
        canvas = None
        if payload.get("echo"):   # the canvas's fast path could not answer: send the mask
            canvas = self.canvas_message(session, selection=self.mask_payload(
                pred.masks[chosen], self.display_size(session), source="prompt"))
        return self.segment_out(session, f"Mask updated in {_ms(start)}: {len(pred.masks)} "
                                         f"candidate(s); #{chosen + 1} selected, score "
                                         f"{float(pred.scores[chosen]):.3f}.", canvas)

    # ================================================================ everything
    def everything(self, session: Session, key: str | None = None,
                   progress: Progress = _no_progress) -> SegmentOut:
        """SAM's automatic masks of the whole image, sent to the canvas to draw in colour."""
        if key is not None:
            self.check_key(session, key)
        emb = self._embedding(session)
        progress(0.1, "automatic masks")
        start = time.perf_counter()
        auto = self.segmenter(session).everything(emb, self.automask_settings())
        if key is not None:
            self.check_key(session, key)
        session.auto = auto
        if session.selection is not None and session.selection.source == "auto":
            session.selection = None
        if not len(auto.masks):
            return self.segment_out(session, f"No automatic masks found ({_ms(start)}).")
        display = self.display_size(session)
        masks = [self.mask_payload(m, display, score=round(float(s), 4))
                 for m, s in zip(auto.masks, auto.scores)]
        return self.segment_out(session, f"{len(auto.masks)} automatic masks in {_ms(start)}: "
                                         "hover to see one, click to select it.",
                                self.canvas_message(session, auto=masks))

    def pick(self, session: Session, payload: dict) -> SegmentOut:
        """A click at working-image (x, y) in 'Everything' mode: select the smallest automatic
        mask containing it, or the nearest one within a few pixels."""
        self.check_key(session, payload.get("key"))
        if session.auto is None or not len(session.auto.masks):
            raise UserError("No automatic masks yet: press 'Everything' first.")
        x, y = float(payload.get("x", -1)), float(payload.get("y", -1))
        radius = PICK_RADIUS_DISPLAY / self.display_scale(session)
        index = maskdata.pick_mask(session.auto.masks, x, y, radius)
        if index is None:
            return self.segment_out(session, "No automatic mask there: click on a coloured region.")
        session.selection = Selection("auto", session.auto.masks[index], index,
                                      float(session.auto.scores[index]), len(session.auto.masks))
        return self.segment_out(session, f"Picked automatic mask #{index + 1} (the smallest one "
                                         "under the click, or the nearest).")

    # ================================================================ Compare views
    def galleries(self, progress: Progress = _no_progress) -> dict:
        return self.ctx.galleries(progress)

    def my_gallery(self, session: Session, view: str, metric: str = "cosine"):
        """The session's own additions in `view` as a Gallery, or None when there are none."""
        emb = session.user_embeddings.get(view)
        records = [r for r in session.user_records if r.view == view]
        if emb is None or not len(records):
            return None
        return gallery_from_arrays(emb, records, view, metric, self.ctx.engine.embedder.model_info)

    def searchable(self, session: Session, view: str, metric: str, include_mine: bool,
                   progress: Progress = _no_progress):
        """The example gallery of `view` (plus the session's additions) searched by `metric`."""
        galleries = self.galleries(progress)
        if view not in galleries:
            raise UserError(f"The gallery has no '{view}' view; choose one of {', '.join(galleries)}.")
        parts = [galleries[view]]
        mine = self.my_gallery(session, view) if include_mine else None
        if mine is not None:
            parts.append(mine)
        return combine(parts, metric)

    def record_image(self, session: Session, source: str) -> np.ndarray:
        if source in session.user_images:
            return session.user_images[source]
        return self.ctx.source_image(source)

    def hit_tile(self, session: Session, hit) -> np.ndarray:
        """The object of a search hit, rendered in its view, as a small tile."""
        rec = hit.record
        image = self.record_image(session, rec.source)
        mask = rle_to_mask(rec.mask_rle) if rec.mask_rle else None
        if mask is None:
            x1, y1, x2, y2 = (int(v) for v in rec.box)
            tile = image[y1:y2, x1:x2]
        else:
            tile = render_view(rec.view, image, mask)
        return rendering.thumbnail(np.ascontiguousarray(tile), TILE_SIDE)

    @staticmethod
    def hit_caption(hit, metric: str) -> str:
        rec = hit.record
        label = rec.category or Path(rec.source).name.replace("session:", "mine:")
        score = f"cos {hit.score:.3f}" if metric == "cosine" else f"d² {hit.score:.3f}"
        return f"#{hit.rank + 1} {score} · {label} · {rec.view}"

    def compare(self, session: Session, progress: Progress = _no_progress) -> tuple:
        """Every view of the selected object and, where the gallery has that view, its
        nearest objects. Returns (session, [view image per VIEW], [neighbour tiles per VIEW], status)."""
        image, mask = session.require_image(), session.require_selection()
        rendered = {name: render_view(name, image, mask) for name in VIEWS}
        progress(0.05, "example gallery")
        galleries = self.galleries(progress)
        searchable_views = [v for v in VIEWS if v in galleries]
        progress(0.6, "embedding the views")
        vectors = self.engine.embedder.embed_images([rendered[v] for v in searchable_views])
        neighbours = {}
        k = self.ctx.settings.neighbours
        for view, vec in zip(searchable_views, vectors):
            gallery = self.searchable(session, view, "cosine", True)
            hits = gallery.search(vec[None], k)[0]
            neighbours[view] = [(self.hit_tile(session, h), self.hit_caption(h, "cosine")) for h in hits]
        views = [rendering.thumbnail(rendered[v], 320) for v in VIEWS]
        tiles = [neighbours.get(v, []) for v in VIEWS]
        missing = [v for v in VIEWS if v not in galleries]
        note = f" (no gallery for {', '.join(missing)})" if missing else ""
        return (session, views, tiles,
                f"Compared {len(VIEWS)} views; nearest objects for {len(searchable_views)} of them{note}.")

    # ================================================================ Search
    def query_vector(self, session: Session, query_source: str, text: str, view: str) -> tuple:
        """((1, D) float32 CLIP query, what it is): the text, or the selected object in `view`."""
        if query_source == "text":
            text = self.check_text(text, "search text")
            if not text:
                raise UserError("Type a text to search for (e.g. 'a cat').")
            return self.engine.embedder.embed_texts([text]), f"text '{text}'"
        image, mask = session.require_image(), session.require_selection()
        return (self.engine.embedder.embed_images([render_view(view, image, mask)]),
                f"the selected object ({view} view)")

    def search(self, session: Session, query_source: str, text: str, view: str, metric: str,
               k: int, include_mine: bool, progress: Progress = _no_progress) -> tuple:
        """Query the gallery with the selected object or a text. Returns
        (session, result tiles, status)."""
        if metric not in ("cosine", "l2"):
            raise UserError(f"Unknown metric {metric!r}: choose cosine or l2.")
        k = int(k)
        if not 1 <= k <= 100:
            raise UserError("The number of results must be between 1 and 100.")
        query, what = self.query_vector(session, query_source, text, view)
        gallery = self.searchable(session, view, metric, include_mine, progress)
        start = time.perf_counter()
        hits = gallery.search(query, k)[0]
        took = _ms(start)
        session.hits, session.hits_from = hits, "examples"
        session.last_query = (query_source, text or "")
        tiles = [(self.hit_tile(session, h), self.hit_caption(h, metric)) for h in hits]
        order = metric_order(metric)
        return (session, tiles,
                f"{len(hits)} results for {what} among {len(gallery)} objects "
                f"(view {view}, {metric}: {order}; search {took}). Select a tile to see its source.")

    # ---------------------------------------------------------------- the large gallery
    def search_large(self, session: Session, query_source: str, text: str,
                     progress: Progress = _no_progress) -> PageOut:
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
        took = _ms(start)
        if not page.hits and offset > 0:
            raise UserError("There are no more results.")
        session.page_offset, session.hits, session.hits_from = offset, page.hits, "large"
        tiles, problems = [], []
        for hit in page.hits:
            picture, problem = hit_picture(hit.record, self.ctx.settings.page_tile_side, large.gallery)
            caption = self.hit_caption(hit, large.metric)
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

    def _show_large_hit(self, session: Session, hit) -> tuple[str, str]:
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
                return self.picture_message(image_key(thumb), Path(rec.source).name, thumb,
                                            notice=f"Full picture missing, its thumbnail shown: {problem}"), (
                    f"{head} · ⚠️ the full picture is missing, only its thumbnail is shown ({problem})")
            picture = placeholder(2 * self.ctx.settings.page_tile_side)
            return self.picture_message("missing-source", Path(rec.source).name, picture,
                                        notice=f"Source image missing: {problem}"), (
                f"{head} · ⚠️ the source image cannot be shown ({problem})")
        x1, y1, x2, y2 = (int(v) for v in rec.box)
        md = (f"{head} · box ({x1}, {y1}, {x2}, {y2}) · view {rec.view}"
              + (f" · category **{rec.category}**" if rec.category else ""))
        return self.picture_message(image_key(image), Path(rec.source).name, image, mask), md

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

    def show_hit(self, session: Session, index: int) -> tuple[str, str]:
        """(canvas message: the hit's source image with its object, Markdown) for result `index`."""
        if not isinstance(index, int) or not 0 <= index < len(session.hits):
            raise UserError("Run a search and select one of its results.")
        hit = session.hits[index]
        if session.hits_from == "large":
            return self._show_large_hit(session, hit)
        rec = hit.record
        image = self.record_image(session, rec.source)
        if rec.mask_rle:
            mask = rle_to_mask(rec.mask_rle)
        else:
            mask = box_to_mask(rec.box, image.shape[:2])
        x1, y1, x2, y2 = (int(v) for v in rec.box)
        md = (f"**#{hit.rank + 1}** score {hit.score:.4f} · source `{Path(rec.source).name}` · "
              f"box ({x1}, {y1}, {x2}, {y2}) · view {rec.view}"
              + (f" · category **{rec.category}**" if rec.category else ""))
        return self.picture_message(image_key(image), Path(rec.source).name, image, mask), md

    def _add_objects(self, session: Session, masks: list[np.ndarray],
                     progress: Progress) -> tuple:
        image = session.require_image()
        views = [v for v in self.ctx.settings.gallery_views]
        source = f"session:{len(session.user_images)}:{session.image_name}"
        objects = [FoundObject(m, mask_to_box(m)) for m in masks if m.any()]
        if not objects:
            raise UserError("There are no objects to add.")
        new_records, new_vectors = [], {}
        for i, view in enumerate(views):
            progress(i / len(views), f"embedding {len(objects)} object(s) as '{view}'")
            new_vectors[view] = self.engine.embedder.embed_images(
                [render_view(view, image, o.mask) for o in objects])
            new_records += records_for(objects, source, image.shape[:2], view)
        # mutate only once everything has worked
        session.user_images = {**session.user_images, source: image}
        session.user_records = session.user_records + new_records
        session.user_embeddings = {
            v: np.concatenate([session.user_embeddings[v], new_vectors[v]])
            if v in session.user_embeddings else new_vectors[v] for v in views}
        return session, self.my_gallery_info(session), (
            f"Added {len(objects)} object(s) of {session.image_name} to your gallery "
            f"({len(views)} views).")

    def add_selected(self, session: Session, progress: Progress = _no_progress) -> tuple:
        """Add the selected object to this session's gallery: (session, info, status)."""
        return self._add_objects(session, [session.require_selection()], progress)

    def add_all(self, session: Session, progress: Progress = _no_progress) -> tuple:
        """Add every automatic mask of the current image to this session's gallery."""
        if session.auto is None:
            emb = self._embedding(session)
            progress(0.0, "automatic masks")
            session.auto = self.segmenter(session).everything(emb, self.automask_settings())
        if not len(session.auto.masks):
            raise UserError("SAM found no objects in this image.")
        return self._add_objects(session, list(session.auto.masks), progress)

    def my_gallery_info(self, session: Session) -> str:
        views = self.ctx.settings.gallery_views
        count = sum(1 for r in session.user_records if r.view == views[0]) if views else 0
        images = len(session.user_images)
        if not count:
            return "Your gallery is empty: add the selected object or all objects of your image."
        return f"Your gallery: {count} object(s) from {images} image(s) (only you see them)."

    # ================================================================ Refer
    def parse_expression(self, text: str) -> str:
        """What the app understood of a referring expression, as Markdown (fast: spaCy only)."""
        text = self.check_text(text, "referring expression")
        if not text:
            raise UserError("Type a referring expression, e.g. 'the cat on the left'.")
        return self.expression_markdown(refer.parse(text))

    def refer(self, session: Session, text: str, progress: Progress = _no_progress) -> tuple:
        """Ground a referring expression in the session's image; the chosen object becomes
        the selection and is drawn on the canvas. Returns (SegmentOut, candidate tiles)."""
        image = session.require_image()
        key = session.image_key
        text = self.check_text(text, "referring expression")
        if not text:
            raise UserError("Type a referring expression, e.g. 'the cat on the left'.")
        settings = refer.GroundingSettings(automask=self.automask_settings())
        # reuse the automatic masks the person already computed ('Everything')
        given = session.auto.masks if session.auto is not None and len(session.auto.masks) else None
        progress(0.1, "scoring candidate objects against the text")
        start = time.perf_counter()
        grounding = refer.ground(self.segmenter(session), self.engine.embedder, image, text,
                                 settings=settings, candidate_masks=given)
        took = _ms(start)
        self.check_key(session, key)
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
        how = (f"the direction '{grounding.expression.direction}' chose candidate "
               f"#{grounding.chosen + 1} among the top {settings.top_k}"
               if grounding.direction_applied else "the best score chose")
        status = (f"Grounded '{text.strip()}' in {took} among {len(grounding)} candidates: {how}. "
                  "It is drawn on the canvas and is now the selected object (Compare and Search use it).")
        canvas = self.canvas_message(session, selection=self.mask_payload(
            mask, self.display_size(session), source="refer"))
        return self.segment_out(session, status, canvas), tiles

    @staticmethod
    def expression_markdown(expression) -> str:
        parts = [f"**noun:** {expression.noun or '(none found)'}",
                 f"**direction:** {expression.direction or '(none)'}"]
        if getattr(expression, "ordinal", 1) and expression.ordinal != 1:
            parts.append(f"**ordinal:** {expression.ordinal}")
        if getattr(expression, "corrections", ()):
            parts.append("**typos fixed:** " + ", ".join(f"{a} → {b}" for a, b in expression.corrections))
        return " · ".join(parts)


def iter_load(cb: Callbacks, session: Session, path, name: str) -> Iterator[SegmentOut]:
    """The two steps of loading an image, as a generator (the UI shows the first at once)."""
    first = cb.begin_load(session, path, name)
    key = session.image_key
    yield first
    if first.canvas is None or json.loads(first.canvas).get("phase") == "encoding":
        yield cb.finish_load(session, key)
