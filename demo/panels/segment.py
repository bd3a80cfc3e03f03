"""Segment: loading an image (upload, example), the canvas's prompts (preview and
commit), Everything + pick, the session's SAM model, and the downloads.

Every request from the canvas carries the image's key (`Session.image_key`); a request
about an image that is no longer the session's is dropped (`Stale`)."""
from __future__ import annotations

import json
import queue
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable, Iterator

import gradio as gr
import numpy as np
from PIL import Image

from core.annotate.strokes import apply_strokes, edited_mask, parse_strokes
from core.engine import sam_label
from core.gallery.build import list_images
from core.io.coco import coco_annotation, coco_document
from core.io.images import load_image
from core.sam.segmenter import image_key
from demo import maskdata
from demo import settings as serving
from demo.canvas import mask_canvas
from demo.errors import error_message
from demo.outputs import PICK_RADIUS_DISPLAY, Exports, Progress, SegmentOut, ms_since, no_progress, plural, put_file
from demo.state import Prompt, Selection, Session, Stale, UserError
from demo.wiring import QUIET, PanelHost, event_data, queues
from demo.workspace import Workspace


class SegmentCallbacks:
    """The Segment panel's work (the canvas and what surrounds it)."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.ctx = ws.ctx

    def example_paths(self) -> list[Path]:
        return list_images(self.ctx.settings.examples_dir)

    def example(self, index: int) -> tuple[Path, str]:
        paths = self.example_paths()
        if not isinstance(index, int) or not 0 <= index < len(paths):
            raise UserError(f"No example number {index!r}.")
        return paths[index], paths[index].name

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
            self.ws.files.release(str(path or ""))   # an upload the app cannot read is of no use
            raise
        if ticket != session.load_ticket:
            raise Stale("dropped: another image was chosen meanwhile")
        key = image_key(opened.image)
        previous, old_key = session.source, session.image_key
        self.ws.files.hold(session, lambda: session.reset_image(opened.image, key, name,
                                                                opened.original_size, str(path)))
        self.ws.files.release(previous, old_key)   # the old upload and picture, unless still held
        if self.ctx.loaded.is_set() and not self.ctx.load_error:
            emb = self.ws.segmenter(session).cached(key)
            session.embedding = emb.key if emb is not None else None
        h, w = opened.image.shape[:2]
        note = (f" (downscaled from {opened.original_size[1]}x{opened.original_size[0]}; exports "
                f"stay at the original size)" if opened.downscaled else "")
        if session.encoded():
            return self.ws.segment_out(session, f"Loaded {name} ({w}x{h}){note}; its SAM embedding was "
                                             "cached. Click on an object.", self.ws.canvas_message(session))
        estimate = self.ctx.encode_estimate(self.ws.model(session))
        return self.ws.segment_out(
            session, f"Loaded {name} ({w}x{h}){note}; encoding it with SAM (about {estimate:.1f} s)...",
            self.ws.canvas_message(session, phase="encoding"))

    def finish_load(self, session: Session, key: str) -> SegmentOut:
        """Compute SAM's embedding of the image `key` (once per image, cached)."""
        self.ws.check_key(session, key)
        if session.encoded():
            raise Stale("already encoded")
        start = time.perf_counter()
        self.ws.embedding(session)
        self.ws.check_key(session, key)   # another image may have been chosen while encoding
        h, w = session.image.shape[:2]
        took = (time.perf_counter() - start) * 1000
        own = (f" Your session uses {self.ctx.model_line(session.sam_model)}."
               if session.sam_model and session.sam_model != self.ctx.engine.settings.sam else "")
        return self.ws.segment_out(session, f"Loaded {session.image_name} ({w}x{h}); SAM embedding "
                                         f"ready in {took:.0f} ms. Click on an object.{own}",
                                self.ws.canvas_message(session, encode_ms=round(took, 1)))

    def load_all(self, session: Session, path, name: str) -> SegmentOut:
        """`begin_load` + `finish_load` in one call (tests, scripts)."""
        first = self.begin_load(session, path, name)
        if session.encoded():
            return first
        return self.finish_load(session, session.image_key)

    def load_example(self, session: Session, index: int) -> SegmentOut:
        path, name = self.example(index)
        return self.load_all(session, path, name)

    def set_model(self, session: Session, name: str) -> SegmentOut:
        """Switch this session (only) to SAM `name`; its image is encoded again with it."""
        name = self.ctx.sam_name(name)
        if name == self.ws.model(session):
            raise Stale("same model")
        session.sam_model = name
        if session.image is None:
            return SegmentOut(session, None, self.ws.selection_info(session),
                              f"SAM model for your session: {self.ctx.model_line(name)}.")
        session.embedding = None
        session.prompts, session.candidates, session.auto, session.selection = [], None, None, None
        emb = self.ws.engine.segmenter_for(name).cached(session.image_key)
        if emb is not None:
            session.embedding = emb.key
            return self.ws.segment_out(session, f"Now using {self.ctx.model_line(name)}; this image "
                                             "was encoded with it already.", self.ws.canvas_message(session))
        return self.ws.segment_out(session, f"Now using {self.ctx.model_line(name)}; encoding the "
                                         f"image with it (about {self.ctx.encode_estimate(name):.1f} s)...",
                                self.ws.canvas_message(session, phase="encoding"))

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
        masks = [self.ws.mask_payload(pred.masks[i], display, score=round(float(pred.scores[i]), 4))
                 for i in range(count)]
        return {"key": key, "ok": True, "masks": masks,
                "ms": round((time.perf_counter() - start) * 1000, 1)}

    def commit_prompts(self, session: Session, payload: dict) -> SegmentOut:
        """The canvas's prompts (and the candidate the person chose) become the session's:
        run SAM at full resolution, select the chosen candidate, write the exports."""
        self.ws.check_key(session, payload.get("key"))
        version = payload.get("version")
        version = version if isinstance(version, int) else session.prompt_version
        if version < session.prompt_version:
            raise Stale("dropped: newer prompts were committed already")
        prompts = self.parse_prompts(payload, session.image.shape[:2])
        try:
            strokes = parse_strokes(payload.get("strokes") or [], session.image.shape[:2])
        except ValueError as exc:
            raise UserError(str(exc)) from None
        session.prompt_version = version
        session.prompts = prompts
        if not prompts and strokes:
            return self.strokes_only(session, strokes, payload.get("shown", "none"))
        if not prompts:
            shown = payload.get("shown", "none")
            sel = session.selection
            if shown == "external" and sel is not None and sel is session.edited:   # strokes undone
                session.selection = Selection(sel.source, session.edit_base, sel.index, sel.score, sel.of)
            self.clear_selection(session, shown)
            session.edited = session.edit_base = None
            return self.ws.segment_out(session, "No prompts: click an object (right-click: "
                                             "background, drag: a box).")
        emb = self.ws.embedding(session)
        self.ws.check_key(session, payload.get("key"))
        if version < session.prompt_version:
            raise Stale("dropped: newer prompts were committed meanwhile")
        points, labels = session.points()
        start = time.perf_counter()
        pred = self.ws.segmenter(session).predict(emb, points if len(points) else None,
                                             labels if len(labels) else None, session.box())
        chosen = payload.get("chosen", 0)
        chosen = chosen if isinstance(chosen, int) and 0 <= chosen < len(pred.masks) else 0
        if version < session.prompt_version or prompts is not session.prompts:
            raise Stale("dropped: newer prompts were committed meanwhile")
        session.candidates = pred
        mask = edited_mask(pred.masks[chosen], strokes, pred.masks[chosen].shape) if strokes else pred.masks[chosen]
        session.selection = Selection("prompt", mask, chosen, float(pred.scores[chosen]), len(pred.masks))
        session.edited, session.edit_base = (session.selection, pred.masks[chosen]) if strokes else (None, None)
        canvas = None
        if payload.get("echo"):   # the canvas's fast path could not answer: send the mask
            canvas = self.ws.canvas_message(session, selection=self.ws.mask_payload(
                pred.masks[chosen], self.ws.display_size(session), source="prompt"))
        elif strokes:             # the edited mask as the server made it: the canvas shows it
            canvas = self.edited_echo(session, mask, version)
        edits = (f" Your {len(strokes)} brush/eraser stroke(s) are re-applied on top of it "
                 "(Undo or Clear removes them)." if strokes else "")
        return self.ws.segment_out(session, f"Mask updated in {ms_since(start)}: {len(pred.masks)} "
                                         f"candidate(s); #{chosen + 1} selected, score "
                                         f"{float(pred.scores[chosen]):.3f}.{edits}", canvas)

    def strokes_only(self, session: Session, strokes: list, shown: str) -> SegmentOut:
        """Brush/eraser strokes without prompts: applied to the selection chosen elsewhere
        (`shown` "external": Refer, a search hit; its unedited mask is kept as the base, so
        every commit re-applies the whole list) or, with nothing selected, to an empty mask
        (a brush with no selection starts a new mask)."""
        session.candidates = None
        sel = session.selection
        if shown == "external" and sel is not None:
            base = session.edit_base if session.edited is sel else sel.mask
        else:
            base = np.zeros(session.image.shape[:2], dtype=bool)
        mask = apply_strokes(base, strokes, base.shape)
        source = sel.source if shown == "external" and sel is not None else "prompt"
        session.selection = Selection(source, mask, 0, float("nan"), 1)
        session.edited, session.edit_base = session.selection, base
        return self.ws.segment_out(session, f"Mask edited by {len(strokes)} brush/eraser stroke(s): "
                                         f"{int(mask.sum())} pixels.",
                                   self.edited_echo(session, mask, session.prompt_version))

    def edited_echo(self, session: Session, mask: np.ndarray, version: int) -> str:
        """A canvas message with the edited mask at display size (source "edited" and the
        prompts' `version`): the canvas replaces its own drawing of the strokes with it, so
        the canvas and the server (and every export) show the same pixels."""
        return self.ws.canvas_message(session, selection=self.ws.mask_payload(
            mask, self.ws.display_size(session), source="edited", version=version))

    @staticmethod
    def clear_selection(session: Session, shown: str) -> None:
        """No prompts any more: the selection follows what the canvas shows (`shown`: an
        "external" one, from Refer or a search, stays; otherwise nothing is selected)."""
        session.clear_prompts()
        if shown != "external":
            session.selection = None

    def everything(self, session: Session, key: str | None = None,
                   progress: Progress = no_progress, on_partial: Callable | None = None) -> SegmentOut:
        """SAM's automatic masks of the whole image, sent to the canvas to draw in colour.
        on_partial(SegmentOut): the masks found so far, while this call computes them
        (`partial_out`; not called when the image's analysis is already known)."""
        if key is not None:
            self.ws.check_key(session, key)
        self.ws.embedding(session)
        progress(0.1, "automatic masks")
        start = time.perf_counter()
        image_key = session.image_key

        def report(auto, done: float) -> None:   # cosmetic: never breaks the shared analysis
            if session.image_key != image_key:
                return
            try:
                on_partial(self.partial_out(session, auto, done, start))
            except Exception as exc:
                print(f"everything: a partial answer was dropped: {exc}", file=sys.stderr)
        auto = self.ws.automatic_masks(session, report if on_partial is not None else None)
        if key is not None:
            self.ws.check_key(session, key)
        session.auto = auto
        if session.selection is not None and session.selection.source == "auto":
            session.selection = None
        if not len(auto.masks):   # the canvas's progress line ends with the notice
            status = f"No automatic masks found ({ms_since(start)})."
            return self.ws.segment_out(session, status, self.ws.canvas_message(session, notice=status))
        masks = self.auto_payloads(session, auto)
        return self.ws.segment_out(session, f"{plural(len(auto.masks), 'automatic mask')} in {ms_since(start)}: "
                                         "hover to see one, click to select it.",
                                self.ws.canvas_message(session, auto=masks))

    def auto_payloads(self, session: Session, auto) -> list[dict]:
        """The canvas payloads of automatic masks (at the display size, with their scores)."""
        display = self.ws.display_size(session)
        return [self.ws.mask_payload(m, display, score=round(float(s), 4)) for m, s in zip(auto.masks, auto.scores)]

    def partial_out(self, session: Session, auto, done: float, start: float) -> SegmentOut:
        """The canvas message of the automatic masks found so far (`done`: the fraction of the
        grid decoded); the session is not changed (a pick waits for all of them)."""
        masks = self.auto_payloads(session, auto)
        status = (f"{plural(len(masks), 'automatic mask')} so far ({round(100 * done)} % of the grid, "
                  f"{ms_since(start)}); the rest are on their way.")
        return self.ws.segment_out(session, status,
                                   self.ws.canvas_message(session, auto=masks, partial=round(done, 3)))

    def pick(self, session: Session, payload: dict) -> SegmentOut:
        """A click at working-image (x, y) in 'Everything' mode: select the smallest automatic
        mask containing it, or the nearest one within a few pixels; {"clear": true}: the
        canvas dropped its pick, so is the automatic selection."""
        self.ws.check_key(session, payload.get("key"))
        if payload.get("clear"):   # the canvas dropped its pick (Ctrl+Z)
            if session.selection is not None and session.selection.source == "auto":
                session.selection = None
            return self.ws.segment_out(session, "Automatic mask deselected.")
        if session.auto is None or not len(session.auto.masks):
            raise UserError("No automatic masks yet: press 'Everything' first.")
        x, y = float(payload.get("x", -1)), float(payload.get("y", -1))
        radius = PICK_RADIUS_DISPLAY / self.ws.display_scale(session)
        index = maskdata.pick_mask(session.auto.masks, x, y, radius)
        if index is None:
            return self.ws.segment_out(session, "No automatic mask there: click on a coloured region.")
        session.selection = Selection("auto", session.auto.masks[index], index,
                                      float(session.auto.scores[index]), len(session.auto.masks))
        return self.ws.segment_out(session, f"Picked automatic mask #{index + 1} (the smallest one "
                                         "under the click, or the nearest).")

    def exports(self, session: Session) -> Exports:
        """The download files of the session's current selection and automatic masks,
        written once per (image, selection, automatic masks) and reused until one changes
        (a click no longer writes four files; the downloads follow the answer)."""
        if session.image is None:
            return Exports(why="Upload an image or pick an example first.")
        state = lambda: (session.image_key, id(session.selection), id(session.auto), session.files_dir)  # noqa: E731
        if session.exported is not None and session.exported[0] == state():
            return session.exported[1]
        try:
            out = self.write_exports(session)
        except FileNotFoundError as exc:   # the session ended (page closed) while writing
            raise Stale("dropped: the session's folder is gone") from exc
        session.exported = (state(), out, session.selection, session.auto)   # held: ids stay unique
        return out

    def write_exports(self, session: Session) -> Exports:
        """Write the selected object (cut-out, mask PNG, mask RLE) and all objects (COCO)
        into the session's folder, at the original size; file names from the image's name."""
        if session.image is None:
            return Exports(why="Upload an image or pick an example first.")
        folder = self.ws.files.files_dir(session)
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
            ann = coco_annotation(full, 1, score=float(sel.score), source=sel.source)
            out.cutout = put_file(folder / f"{stem}_cutout.png", maskdata.cutout_png(original, full))
            out.mask_png = put_file(folder / f"{stem}_mask.png", maskdata.mask_png(full))
            out.mask_rle = put_file(folder / f"{stem}_mask.rle.json", json.dumps(self.mark_untrained(
                {"image": session.image_name, "height": size[0], "width": size[1], **ann,
                 "note": "COCO compressed RLE; bbox is COCO [x, y, width, height] in pixels of "
                         "the original"})))
        else:
            out.why = "Select an object first (click it, or pick one after 'Everything')."
        if objects:
            out.coco_selection_only = session.auto is None
            note = ("the selected object only: press 'Everything' to include all objects"
                    if out.coco_selection_only else "automatic masks ('Everything') and the selected object")
            out.coco = put_file(folder / f"{stem}_objects.coco.json", json.dumps(self.mark_untrained(
                coco_document(session.image_name, size, objects, extras, note))))
        return out

    def mark_untrained(self, document: dict) -> dict:
        """`document` with `"untrained": true` and a warning in its note when the models
        have random weights (as the CLI's result.json says)."""
        if not self.ctx.engine.untrained:
            return document
        warning = "made with UNTRAINED models (random weights): the masks are meaningless"
        if "info" in document:
            document["info"]["description"] += f"; {warning}"
        else:
            document["note"] = f"{document.get('note', '')}; {warning}".lstrip("; ")
        return {**document, "untrained": True}

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


def iter_everything(seg: SegmentCallbacks, session: Session, key: str | None) -> Iterator[SegmentOut]:
    """Everything as a generator: the masks found so far (at most every 0.4 s, the newest
    only, when the image's analysis is computed now), then all of them. The work runs in its
    own thread; its failure is raised here, after the partial answers."""
    partials: queue.Queue = queue.Queue()
    done: dict = {}

    def work() -> None:
        try:
            done["out"] = seg.everything(session, key, on_partial=partials.put)
        except BaseException as exc:  # re-raised below, in the caller's thread
            done["error"] = exc
        finally:
            partials.put(None)

    worker = threading.Thread(target=work, name="samclip-everything", daemon=True)
    worker.start()
    while (item := partials.get()) is not None:
        while not partials.empty():      # a slow page gets the newest masks only
            newer = partials.get()
            if newer is None:
                item = None
                break
            item = newer
        if item is None:
            break
        yield item
    worker.join()
    if "error" in done:
        raise done["error"]
    yield done["out"]


def iter_load(seg: SegmentCallbacks, session: Session, path, name: str) -> Iterator[SegmentOut]:
    """The two steps of loading an image, as a generator (the UI shows the first at once)."""
    first = seg.begin_load(session, path, name)
    key = session.image_key
    yield first
    if first.canvas is None or json.loads(first.canvas).get("phase") == "encoding":
        yield seg.finish_load(session, key)


# ---------------------------------------------------------------------------- the panel
DOWNLOADS = (("dl-cutout", "Cut-out PNG", "cutout"), ("dl-png", "Mask PNG", "mask_png"),
             ("dl-rle", "Mask COCO RLE", "mask_rle"), ("dl-coco", "All objects COCO JSON", "coco"))


def build(sh: PanelHost) -> None:
    """The canvas with the status and info lines under it (so on a phone they follow it),
    the SAM model choice, the examples and the downloads beside it; sets the shell's
    `canvas`, `status`, `q`, `seg_outputs`, `segment_values` and `after_segment`."""
    ctx, cb = sh.ctx, sh.cb
    examples = cb.segment.example_paths()
    with gr.Row(equal_height=False, elem_id="segment-row"):
        with gr.Column(scale=3, min_width=300, elem_id="canvas-col"):
            canvas = mask_canvas(_preview_function(cb), name="canvas", elem_id="canvas")
            status = gr.Markdown("", elem_id="status")
            info = gr.Markdown("No image yet: upload one or pick an example.", elem_id="info")
        with gr.Column(scale=1, min_width=260):
            # beside the canvas on a wide screen, after it on a phone (the canvas comes first)
            sam_choice = gr.Dropdown([(sam_label(n), n) for n in ctx.sam_options()],
                                     value=ctx.engine.settings.sam, label="SAM model (your session)",
                                     elem_id="sam-model")
            example_gallery = gr.Gallery(
                value=[(str(p), p.stem) for p in examples], label="Pick an example",
                columns=2, height=250, allow_preview=False, object_fit="cover", elem_id="examples")
            with gr.Column(elem_id="downloads"):
                buttons = [gr.DownloadButton(label, value=None, size="sm", elem_id=eid, interactive=False)
                           for eid, label, _ in DOWNLOADS]
                export_note = gr.Markdown("Downloads: select an object first.", elem_id="export-note")
    sh.canvas, sh.status = canvas, status
    sh.q = queues(status)
    sh.seg_outputs = [sh.session, canvas, info, status]
    sh.segment_values = _segment_values(cb)
    sh.after_segment = _downloads_chain(sh, [*buttons, export_note])
    _wire(sh, example_gallery, sam_choice)


def _preview_function(cb) -> Callable:
    """The canvas's fast path as a server function: masks for prompts (no session state,
    shared caches only); a failure becomes a reason the canvas shows."""
    def preview(args):
        payload = args[0] if isinstance(args, list) and args else args
        try:
            return cb.segment.preview(payload if isinstance(payload, dict) else {})
        except Exception as exc:  # the canvas shows the reason; never a stack trace
            traceback.print_exc(file=sys.stderr)
            return {"key": None, "ok": False, "reason": error_message(exc)}
    return preview


def _segment_values(cb) -> Callable:
    def segment_values(out: SegmentOut, request: gr.Request) -> tuple:
        """The Segment area's outputs; the session is registered with its page first, so
        closing the page deletes any file it is given later."""
        cb.files.register(out.session, request.session_hash)
        return (out.session, out.canvas if out.canvas is not None else gr.skip(), out.info, out.status)
    return segment_values


def _downloads_chain(sh: PanelHost, outputs: list) -> Callable:
    """`chain(event)`: after a Segment-area event, the downloads of the (new) selection,
    written once per selection (`SegmentCallbacks.exports`), off the click's path."""
    cb = sh.cb

    def on_exports(sess: Session, request: gr.Request) -> tuple:
        cb.files.register(sess, request.session_hash)
        ex = cb.segment.exports(sess)
        files = [getattr(ex, attr) for _, _, attr in DOWNLOADS]
        dls = [gr.DownloadButton(value=f, interactive=f is not None) for f in files]
        return (*dls, downloads_note(ex), gr.skip())

    def chain(event):   # the status line is an output: a failure's message (or a dropped write) goes there
        return event.then(sh.guard(on_exports), [sh.session], [*outputs, sh.status], **sh.q["exports"])
    return chain


def downloads_note(ex: Exports) -> str:
    """The line under the download buttons: the files, what the COCO JSON holds, what is missing."""
    names = [Path(f).name for f in (ex.cutout, ex.mask_png, ex.mask_rle, ex.coco) if f]
    note = ("Downloads (original size): " + ", ".join(names)) if names else ""
    if ex.coco and ex.coco_selection_only:
        note += " · the COCO JSON holds only the selection ('Everything' not run)"
    if ex.why:
        note = (note + " · " if note else "Downloads: ") + ex.why
    return note


def _wire(sh: PanelHost, example_gallery, sam_choice) -> None:
    """Loading (example, upload, model switch, then the encoding in its own queue), the
    canvas's prompts, pick and Everything; each followed by the downloads."""
    cb, session, outputs, values, q = sh.cb, sh.session, sh.seg_outputs, sh.segment_values, sh.q

    def on_example(sess: Session, evt: gr.SelectData, request: gr.Request):
        cb.files.register(sess, request.session_hash)
        path, name = cb.segment.example(evt.index)
        return values(cb.segment.begin_load(sess, path, name), request)

    def on_upload(sess: Session, evt: gr.EventData, request: gr.Request):
        """Load the uploaded file; the examples gallery no longer shows one as chosen."""
        cb.files.register(sess, request.session_hash)
        data = event_data(evt)
        path = cb.files.upload_path(data.get("path"), cb.files.upload_dirs)
        out = cb.segment.begin_load(sess, path, str(data.get("name") or Path(path).name))
        return (*values(out, request), gr.Gallery(selected_index=None))

    def on_encode(sess: Session, request: gr.Request):
        if sess.image is None or sess.encoded():
            cb.refer.prepare_if_open(sess)   # a cached image: Refer's analysis may start now
            return {sh.status: gr.skip()}
        out = values(cb.segment.finish_load(sess, sess.image_key), request)
        cb.refer.prepare_if_open(sess)       # the Refer tab showing: prepare the new image
        return out

    def on_model(sess: Session, name: str, request: gr.Request):
        cb.files.register(sess, request.session_hash)
        return values(cb.segment.set_model(sess, name), request)

    def on_prompts(sess: Session, evt: gr.EventData, request: gr.Request):
        return values(cb.segment.commit_prompts(sess, event_data(evt)), request)

    def on_pick(sess: Session, evt: gr.EventData, request: gr.Request):
        return values(cb.segment.pick(sess, event_data(evt)), request)

    def on_everything(sess: Session, evt: gr.EventData, request: gr.Request):
        if not serving.EVERYTHING_PARTIALS:
            yield values(cb.segment.everything(sess, event_data(evt).get("key")), request)
            return
        for out in iter_everything(cb.segment, sess, event_data(evt).get("key")):
            yield values(out, request)

    # Loading an image is two events: the quick one (read, check, show the picture) runs
    # with the light events; the SAM encoding follows in the encoder's own queue (one at a
    # time; the status line shows the person's place in it).
    encode = sh.heavy(on_encode, True)
    for trigger, fn, inputs, extra in ((example_gallery.select, on_example, [session], []),
                                       (sh.canvas.upload, on_upload, [session], [example_gallery]),
                                       (sam_choice.input, on_model, [session, sam_choice], [])):
        first = trigger(sh.heavy(fn, True), inputs, outputs + extra, **QUIET, **q["light"])
        sh.after_segment(first.then(encode, [session], outputs, **q["encoder"]))
    # every prompt change is committed (Gradio's default "once" dropped a change made while
    # the previous commit ran); commit_prompts drops the older of two by their version
    sh.after_segment(sh.canvas.prompts(sh.heavy(on_prompts, True), [session], outputs,
                                       trigger_mode="multiple", **QUIET, **q["click"]))
    sh.after_segment(sh.canvas.pick(sh.guard(on_pick, True), [session], outputs, **QUIET, **q["click"]))
    sh.after_segment(sh.canvas.everything(sh.heavy(on_everything, True), [session], outputs,
                                          **QUIET, **q["everything"]))
