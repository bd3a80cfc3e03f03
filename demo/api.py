"""The app's public API: a few deliberate, stateless endpoints for scripts (`gradio_client`)
and agents (MCP, `python app.py --mcp`), separate from the page's own events (all private).

Each endpoint is a thin wrapper over one core call, under the same rules as the page: the
same upload checks and limits (`maskdata.open_upload`, `Workspace.check_text`), the same
concurrency groups (`demo.wiring.queues`: segment in "click", everything / find / label in
"everything", refer in "refer", search in "clip"), errors as one-line messages (`gr.Error` with
`demo.errors.error_message`), nothing shared is changed, and nothing is kept between calls
(no session state: one caller's results are never seen by another).

Images come in as files and are downscaled like uploads (the working size); coordinates in
and out are pixels of the ORIGINAL image: points and boxes are scaled in, masks and boxes
scaled back out. Masks are COCO RLE ({"size": [H, W], "counts": str}, pycocotools).
"""
from __future__ import annotations

import base64
import functools
import inspect
import io
import json
import os
import sys
import traceback
import typing
from pathlib import Path
from typing import Any, Callable, Literal

import gradio as gr
import numpy as np
from PIL import Image

from core import refer
from core.find.run import find_in_image, instances_json, label_image
from core.gallery.browse import hit_thumbnail
from core.gallery.examples import combine
from core.io.coco import coco_document
from core.io.masks import box_to_mask, mask_to_png, mask_to_rle
from core.io.panoptic import category_entries, legend
from core.views import mask_to_box, render_view
from demo import maskdata, rendering
from demo.context import AppContext, ModelsUnavailable
from demo.errors import error_message
from demo.galleries import record_tile
from demo.state import UserError
from demo.wiring import queues
from demo.workspace import Workspace

#: The public endpoints (api_name -> concurrency group of the page's work of that kind).
ENDPOINTS: dict[str, str] = {"segment": "click", "everything": "everything", "refer": "refer",
                             "find": "everything", "label": "everything", "search": "clip"}
THUMB_SIDE = 128
MAX_POINTS = 64


class Picture:
    """An uploaded image at working size, and how to map coordinates to / from the original."""

    def __init__(self, opened: maskdata.OpenedImage, name: str):
        self.image = opened.image
        self.name = name
        self.original = tuple(int(v) for v in opened.original_size)      # (H, W)
        h, w = self.image.shape[:2]
        self.sx, self.sy = w / self.original[1], h / self.original[0]   # original -> working

    def point_in(self, x: float, y: float) -> tuple[float, float]:
        """(x, y) in original pixels -> working pixels; UserError outside the image."""
        H, W = self.original
        if not (np.isfinite(x) and np.isfinite(y)) or not (0 <= x <= W and 0 <= y <= H):
            raise UserError(f"The point ({x:g}, {y:g}) is outside the image, which is {W}x{H} "
                            "(x from 0 to width, y from 0 to height, in pixels).")
        h, w = self.image.shape[:2]
        return min(x * self.sx, w - 1.0), min(y * self.sy, h - 1.0)

    def box_in(self, box) -> np.ndarray:
        """[x0, y0, x1, y1] in original pixels (x1, y1 exclusive) -> working pixels (checked, clipped)."""
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            raise UserError("A box is [x0, y0, x1, y1] in pixels of the image (x1, y1 exclusive).")
        x0, y0, x1, y1 = (float(v) for v in box)
        if not all(np.isfinite(v) for v in (x0, y0, x1, y1)):
            raise UserError("A box needs four finite numbers.")
        H, W = self.original
        x0, x1 = sorted((min(max(x0, 0.0), W), min(max(x1, 0.0), W)))
        y0, y1 = sorted((min(max(y0, 0.0), H), min(max(y1, 0.0), H)))
        if x1 - x0 < 2 or y1 - y0 < 2:
            raise UserError(f"The box {list(box)} is too small or outside the {W}x{H} image.")
        return np.asarray([x0 * self.sx, y0 * self.sy, x1 * self.sx, y1 * self.sy], np.float32)

    def mask_out(self, mask: np.ndarray) -> np.ndarray:
        return maskdata.to_size(mask, self.original)

    def box_out(self, box) -> list[float]:
        x0, y0, x1, y1 = (float(v) for v in box)
        return [round(x0 / self.sx, 2), round(y0 / self.sy, 2), round(x1 / self.sx, 2), round(y1 / self.sy, 2)]

    def mask_json(self, mask: np.ndarray, score: float | None = None) -> dict:
        """{"box", "score", "area", "rle"} of a working-size mask, at the original size."""
        full = self.mask_out(mask)
        out = {"box": [round(float(v), 2) for v in mask_to_box(full)] if full.any() else [0, 0, 0, 0],
               "area": int(full.sum()), "rle": mask_to_rle(full)}
        if score is not None:
            out["score"] = round(float(score), 6)
        return out

    def mask_png(self, mask: np.ndarray) -> str:
        """A working-size mask as a base64 PNG at the original size."""
        return base64.b64encode(mask_to_png(self.mask_out(mask))).decode("ascii")

    def head(self) -> dict:
        return {"image": self.name, "size": list(self.original), "work_size": list(self.image.shape[:2])}


def _from_mcp(request) -> bool:
    """True for a call made by Gradio's MCP server on behalf of an agent (it forwards the MCP
    request's headers, which carry the protocol version or the session id)."""
    headers = getattr(request, "headers", None) or {}
    return any(name in headers for name in ("mcp-protocol-version", "mcp-session-id"))


def public(fn: Callable) -> Callable:
    """An endpoint for `gr.api`: any exception becomes `gr.Error` with one line for a person
    (never a traceback; unexpected ones are logged with their traceback on the server), and
    an agent calling through MCP gets the answer as JSON text (Gradio's MCP server would
    otherwise send Python's repr of the dict). Scripts (gradio_client) get the dict."""
    hints = typing.get_type_hints(fn)
    signature = inspect.signature(fn)
    params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()]
    count = len(params)   # Gradio passes the request positionally, after the inputs
    params.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                    annotation=gr.Request))

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        request = kwargs.pop("request", args[count] if len(args) > count else None)
        try:
            result = fn(*args[:count], **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            if not isinstance(exc, (UserError, ModelsUnavailable, ValueError)):
                traceback.print_exc(file=sys.stderr)
            raise gr.Error(" ".join(error_message(exc).split()), print_exception=False) from None
        return json.dumps(result, ensure_ascii=False) if _from_mcp(request) else result

    wrapper.__signature__ = signature.replace(parameters=params, return_annotation=hints.get("return"))
    wrapper.__annotations__ = {**hints, "request": gr.Request}
    return wrapper


#: The one answer to an image argument that is not a file Gradio received for this request.
#: It says nothing about the server's disk: the same words whether a path exists or not.
NOT_RECEIVED = ("The image must be sent with the request: upload the file (gradio_client's "
                "handle_file), or give an http(s) URL or a data: URI. Paths on the server are not accepted.")


#: The answer to an http(s) URL that Gradio would not fetch (an address on the server's own
#: network, one that does not answer with a file, a redirect loop); the same for every cause.
NOT_FETCHED = ("The image URL could not be fetched: the server fetches only public http(s) addresses "
               "(never localhost or a private network) that answer with the file. Send the file itself "
               "instead (gradio_client's handle_file, or a data: URI).")


def _sent_urls(value: Any) -> bool:
    """True when `value` (an endpoint's inputs) holds a file dict naming an http(s) URL."""
    if isinstance(value, (list, tuple)):
        return any(_sent_urls(v) for v in value)
    if not isinstance(value, dict):
        return False
    named = [v for v in (value.get("path"), value.get("url")) if isinstance(v, str)]
    return any(v.lower().startswith(("http://", "https://")) for v in named)


def _holds_file(value: Any) -> bool:
    """True when `value` holds a dict marked as a Gradio file (`meta`), which Gradio checks."""
    if isinstance(value, (list, tuple)):
        return any(_holds_file(v) for v in value)
    return isinstance(value, dict) and isinstance(value.get("meta"), dict)


class ApiBlocks(gr.Blocks):
    """`gr.Blocks` whose public endpoints (ENDPOINTS) answer a file Gradio refused to take for
    them with the API's own one line: NOT_RECEIVED for a path outside Gradio's upload folder
    (`..`, file://, anywhere on the disk), NOT_FETCHED for a URL Gradio would not fetch
    (its SSRF rules: no localhost, no private network). Without this Gradio answers those with
    an anonymous "the upstream app raised an exception" and logs a traceback. The page's own
    events are unchanged."""

    async def preprocess_data(self, block_fn, inputs, state, explicit_call: bool = False):
        try:
            return await super().preprocess_data(block_fn, inputs, state, explicit_call)
        except gr.Error:
            raise
        except Exception as exc:
            if getattr(block_fn, "api_name", None) not in ENDPOINTS or not _holds_file(inputs):
                raise
            print(f"public API /{block_fn.api_name}: refused a file argument ({type(exc).__name__})",
                  file=sys.stderr)
            raise gr.Error(NOT_FETCHED if _sent_urls(inputs) else NOT_RECEIVED, print_exception=False) from None


def _received_file(path: Any) -> Path:
    """The real path of a file in Gradio's upload folder, or UserError(NOT_RECEIVED).

    Gradio moves every file it receives (an upload, a URL it fetched, a data: URI it saved) into
    its upload folder (`gradio.utils.get_upload_folder()`, $GRADIO_TEMP_DIR) before our code runs.
    Anything else (a path elsewhere, `..` out of the folder, a symbolic link, a missing file) is
    refused with the same message, so an answer never tells what exists on the server."""
    from gradio.utils import get_upload_folder

    if not isinstance(path, str) or not path or "\0" in path:
        raise UserError(NOT_RECEIVED)
    folder = Path(os.path.realpath(get_upload_folder()))
    real = Path(os.path.realpath(path))
    if os.path.islink(path) or folder not in real.parents or not real.is_file():
        raise UserError(NOT_RECEIVED)
    return real


def _file_path(image: Any) -> tuple[str | None, str]:
    """(server path, display name) of an image argument Gradio received for this request.

    Only a FileData (a dict or object whose `meta` says "gradio.FileData": Gradio has checked
    and moved such a file into its upload folder) is accepted; a plain string or a dict without
    `meta` is never opened, whatever it names (UserError(NOT_RECEIVED))."""
    if image is None:
        return None, ""
    if isinstance(image, dict):
        meta, path, name = image.get("meta"), image.get("path"), image.get("orig_name")
    elif isinstance(image, gr.FileData):
        meta, path, name = image.meta, image.path, image.orig_name
    else:
        raise UserError(NOT_RECEIVED)
    if not isinstance(meta, dict) or meta.get("_type") != "gradio.FileData":
        raise UserError(NOT_RECEIVED)
    real = _received_file(path)
    shown = name if isinstance(name, str) and name else real.name
    return str(real), Path(shown).name


class PublicApi:
    """The endpoints, bound to the shared `AppContext` (models and galleries, read only)."""

    def __init__(self, ctx: AppContext):
        self.ctx = ctx

    # -------------------------------------------------------------------- helpers
    def _open(self, image: Any, required: bool = True) -> Picture | None:
        path, name = _file_path(image)
        if path is None and not required:
            return None
        if path is None:
            raise UserError("Give an image (a file: PNG, JPEG, WebP...).")
        return Picture(maskdata.open_upload(path, name, self.ctx.settings.work_max_side), name)

    def _engine(self):
        return self.ctx.require_models()

    # ------------------------------------------------------------------ endpoints
    def segment(self, image: gr.FileData, points: list[list[float]] | None = None,
                box: list[float] | None = None) -> dict:
        """Segment one object in an image with SAM from clicks and/or a box.

        Args:
            image: the image: an uploaded file (gradio_client.handle_file), a public http(s) URL, or a data: URI such as data:image/jpeg;base64,... (PNG, JPEG, WebP...). The server does not fetch addresses on its own network (localhost, private ranges) nor open paths on its disk.
            points: clicks as [[x, y, label], ...]: x from the left edge and y from the top, in pixels of the image as sent (not scaled); label 1 = on the object, 0 = background.
            box: an optional box [x0, y0, x1, y1] around the object, in pixels of the image as sent: (x0, y0) is its top-left corner and (x1, y1) its bottom-right corner, exclusive (one past the last pixel, so width = x1 - x0).
        Returns:
            {"image", "size": [H, W], "best": {"score", "box" [x0, y0, x1, y1], "area", "rle" (COCO RLE), "png" (base64 mask PNG)}, "candidates": [{"score", "box", "area", "rle"}]}; all at the image's own size.
        """
        pic = self._open(image)
        pts, labels = [], []
        for item in points or []:
            if not isinstance(item, (list, tuple)) or len(item) != 3:
                raise UserError("A point is [x, y, label] with label 1 (object) or 0 (background).")
            x, y, label = float(item[0]), float(item[1]), int(item[2])
            if label not in (0, 1):
                raise UserError(f"A point's label is 1 (object) or 0 (background), not {item[2]}.")
            pts.append(pic.point_in(x, y))
            labels.append(label)
        if len(pts) > MAX_POINTS:
            raise UserError(f"At most {MAX_POINTS} points, please.")
        work_box = pic.box_in(box) if box else None
        if not pts and work_box is None:
            raise UserError("Give at least one point [x, y, 1] or a box [x0, y0, x1, y1].")
        seg = self._engine().segmenter
        emb = seg.set_image(pic.image)           # cached per image content, shared
        pred = seg.predict(emb, np.asarray(pts, np.float32).reshape(-1, 2) if pts else None,
                           np.asarray(labels, np.int64) if pts else None, work_box)
        candidates = [pic.mask_json(m, s) for m, s in zip(pred.masks, pred.scores)]
        best = {**candidates[0], "png": pic.mask_png(pred.masks[0])}
        return {**pic.head(), "best": best, "candidates": candidates}

    def everything(self, image: gr.FileData) -> dict:
        """All of SAM's automatic masks of an image (everything mode), best score first.

        Args:
            image: the image: an uploaded file (gradio_client.handle_file), a public http(s) URL, or a data: URI such as data:image/jpeg;base64,... (PNG, JPEG, WebP...). The server does not fetch addresses on its own network (localhost, private ranges) nor open paths on its disk.
        Returns:
            {"image", "size": [H, W], "count", "masks": [{"score", "box" [x0, y0, x1, y1], "area", "rle" (COCO RLE)}]} at the image's own size.
        """
        pic = self._open(image)
        auto = self._engine().automatic_masks(pic.image, self.ctx.automask_settings())
        masks = [pic.mask_json(m, s) for m, s in zip(auto.masks, auto.scores)]
        return {**pic.head(), "count": len(masks), "masks": masks}

    def refer(self, image: gr.FileData, expression: str) -> dict:
        """Find the one object a sentence refers to, e.g. "the cat on the left" or "the second cup from the right".

        Args:
            image: the image: an uploaded file (gradio_client.handle_file), a public http(s) URL, or a data: URI such as data:image/jpeg;base64,... (PNG, JPEG, WebP...). The server does not fetch addresses on its own network (localhost, private ranges) nor open paths on its disk.
            expression: the referring expression (English).
        Returns:
            {"image", "size", "understood": {"noun", "direction", "ordinal", "corrections"}, "chosen": {"score", "box", "area", "rle"}, "candidates": how many were compared, "direction_applied"}.
        """
        text = Workspace.check_text(expression, "referring expression")
        if not text:
            raise UserError("Type a referring expression, e.g. 'the cat on the left'.")
        pic = self._open(image)
        expr = refer.parse(text)
        engine = self._engine()
        g = engine.ground(pic.image, expr, refer.GroundingSettings(automask=self.ctx.automask_settings()))
        understood = {"noun": expr.noun, "direction": expr.direction, "ordinal": int(expr.ordinal),
                      "corrections": [list(c) for c in getattr(expr, "corrections", ())]}
        return {**pic.head(), "expression": text, "understood": understood,
                "chosen": pic.mask_json(g.mask, float(g.scores[g.chosen])),
                "candidates": len(g), "direction_applied": bool(g.direction_applied)}

    def find(self, image: gr.FileData, phrase: str) -> dict:
        """Find every instance of something in an image, e.g. "dogs" or "the cups on the left".

        Args:
            image: the image: an uploaded file (gradio_client.handle_file), a public http(s) URL, or a data: URI such as data:image/jpeg;base64,... (PNG, JPEG, WebP...). The server does not fetch addresses on its own network (localhost, private ranges) nor open paths on its disk.
            phrase: what to find: a noun phrase (a direction word orders the answer).
        Returns:
            {"image", "size", "phrase", "count", "summary", "instances": [{"box" [x0, y0, x1, y1], "score", "label", "rle" (COCO RLE)}]} at the image's own size.
        """
        text = Workspace.check_text(phrase, "phrase")
        if not text:
            raise UserError("Type what to find, e.g. 'dogs' or 'the cups on the left'.")
        pic = self._open(image)
        found = find_in_image(self._engine(), pic.image, text, automask=self.ctx.automask_settings())
        doc = instances_json(found)
        for item, box, mask in zip(doc["instances"], found.boxes, found.masks):
            item["box"], item["rle"] = pic.box_out(box), mask_to_rle(pic.mask_out(mask))
        return {**pic.head(), **doc}

    def label(self, image: gr.FileData, vocabulary: str = "") -> dict:
        """Label everything in an image with a vocabulary (zero-shot): COCO instances and panoptic segments.

        Args:
            image: the image: an uploaded file (gradio_client.handle_file), a public http(s) URL, or a data: URI such as data:image/jpeg;base64,... (PNG, JPEG, WebP...). The server does not fetch addresses on its own network (localhost, private ranges) nor open paths on its disk.
            vocabulary: comma-separated category names, e.g. "cat, dog, sofa"; blank = the COCO panoptic categories.
        Returns:
            {"image", "size", "instances": a COCO instances document (RLE masks, scores, category names), "panoptic": {"segments_info": [{"id", "category_id", "category", "area", "bbox" [x, y, w, h], "isthing", "score"}]}, "categories", "legend"}.
        """
        vocab = Workspace.vocabulary(vocabulary)
        pic = self._open(image)
        result = label_image(self._engine(), pic.image, vocab, automask=self.ctx.automask_settings())
        inst = result.instances
        extras = [{"score": round(float(s), 6), "category_name": n} for s, n in zip(inst.scores, inst.names)]
        document = coco_document(pic.name or "image", pic.original, [pic.mask_out(m) for m in inst.masks], extras,
                                 note="instances labelled with CLIP (zero-shot) on SAM's automatic masks",
                                 categories=category_entries(vocab),
                                 category_ids=[int(c) for c in inst.category_ids])
        names = {c.id: c.name for c in vocab}
        area_scale = 1.0 / (pic.sx * pic.sy)
        segments = [{"id": s.id, "category_id": s.category_id, "category": names.get(s.category_id),
                     "area": int(round(s.area * area_scale)),
                     "bbox": [round(s.bbox[0] / pic.sx, 2), round(s.bbox[1] / pic.sy, 2),
                              round(s.bbox[2] / pic.sx, 2), round(s.bbox[3] / pic.sy, 2)],
                     "isthing": bool(s.isthing), "score": round(float(s.score), 6)}
                    for s in result.panoptic.segments]
        document["untrained"] = bool(self.ctx.engine.untrained)
        return {**pic.head(), "instances": document, "panoptic": {"segments_info": segments},
                "categories": category_entries(vocab), "legend": legend(vocab, result.semantic)}

    # `image` is typed gr.FileData, not `gr.FileData | None`: Gradio's MCP server turns a URL or
    # data: URI into a file only where the schema is FileData itself, not one branch of a union.
    def search(self, text: str = "", image: gr.FileData = None, box: list[float] | None = None,  # type: ignore[assignment]
               k: int = 8, view: str = "crop", metric: Literal["cosine", "l2"] = "cosine",
               gallery: Literal["examples", "large"] = "examples", thumbnails: bool = False) -> dict:
        """Search a gallery of objects with CLIP, by a text or by an object in an image.

        Args:
            text: what to look for, e.g. "a red car" (used when given; else the image is the query).
            image: an image to search with instead of a text (the object in `box`, else the whole image): an uploaded file (gradio_client.handle_file), a public http(s) URL, or a data: URI such as data:image/jpeg;base64,... (PNG, JPEG, WebP...). The server does not fetch addresses on its own network (localhost, private ranges) nor open paths on its disk.
            box: the object's box [x0, y0, x1, y1] in pixels of the query image: (x0, y0) is its top-left corner and (x1, y1) its bottom-right corner, exclusive (one past the last pixel, so width = x1 - x0).
            k: how many results (1 to 100).
            view: how objects are rendered for CLIP in the example gallery: mask, crop, mask_crop, context, dim or blur.
            metric: cosine (higher is closer) or l2 (squared distance: lower is closer); example gallery only.
            gallery: "examples" (the app's example images) or "large" (the gallery given with --gallery; its view and metric are fixed).
            thumbnails: also return each hit as a small base64 JPEG.
        Returns:
            {"query", "gallery", "view", "metric", "hits": [{"rank", "score", "source", "box" [x0, y0, x1, y1], "category", "view"(, "thumbnail")}]}.
        """
        if metric not in ("cosine", "l2"):
            raise UserError(f"Unknown metric {metric!r}: choose cosine or l2.")
        if gallery not in ("examples", "large"):
            raise UserError(f"Unknown gallery {gallery!r}: choose examples or large.")
        k = int(k)
        if not 1 <= k <= 100:
            raise UserError("The number of results k must be between 1 and 100.")
        text = Workspace.check_text(text, "search text")
        pic = None if text else self._open(image, required=False)
        if not text and pic is None:
            raise UserError("Give a text to search for (e.g. 'a cat') or an image.")
        engine = self._engine()
        large = self.ctx.large_gallery() if gallery == "large" else None
        if large is None:
            galleries = self.ctx.galleries()
            if view not in galleries:
                raise UserError(f"The gallery has no '{view}' view; choose one of {', '.join(galleries)}.")
        else:
            view, metric = large.view, large.metric
        if text:
            query, what = engine.embedder.embed_texts([text]), f"text '{text}'"
        else:
            h, w = pic.image.shape[:2]
            mask = box_to_mask(pic.box_in(box), (h, w)) if box else np.ones((h, w), bool)
            query = engine.embedder.embed_images([render_view(view, pic.image, mask)])
            what = f"the {'box' if box else 'whole image'} of {pic.name or 'the image'} ({view} view)"
        if large is None:
            hits = combine([galleries[view]], metric).search(query, k)[0]
        else:
            hits = large.page(np.asarray(query, np.float32).reshape(-1), 0, k).hits
        out = []
        for hit in hits:
            rec = hit.record
            item = {"rank": int(hit.rank) + 1, "score": round(float(hit.score), 6), "source": Path(rec.source).name,
                    "box": [round(float(v), 2) for v in rec.box], "category": rec.category, "view": rec.view}
            if thumbnails:
                item["thumbnail"] = self._thumbnail(rec, large)
            out.append(item)
        return {"query": what, "gallery": "examples" if large is None else large.name, "view": view,
                "metric": metric, "hits": out}

    def _thumbnail(self, rec, large) -> str | None:
        try:
            if large is not None:
                tile = hit_thumbnail(large.gallery, rec)
                if tile is None:
                    return None
                tile = rendering.thumbnail(np.ascontiguousarray(tile), THUMB_SIDE)
            else:
                tile = record_tile(self.ctx.source_image(rec.source), rec, THUMB_SIDE)
            buf = io.BytesIO()
            Image.fromarray(tile).save(buf, "JPEG", quality=85)
            return base64.b64encode(buf.getvalue()).decode("ascii")
        except (OSError, ValueError, KeyError, TypeError):   # a missing source: the hit without a picture
            return None


def register(ctx: AppContext, gpu: Callable | None = None) -> PublicApi:
    """Register the public endpoints in the current `gr.Blocks` (call inside it), each in the
    concurrency group of the page's work of that kind. `gpu` wraps them (e.g. spaces.GPU)."""
    api = PublicApi(ctx)
    groups = queues(None)
    for name, group in ENDPOINTS.items():
        fn = public(getattr(api, name))
        gr.api(gpu(fn) if gpu else fn, api_name=name, concurrency_id=groups[group]["concurrency_id"],
               concurrency_limit=groups[group]["concurrency_limit"])
    return api
