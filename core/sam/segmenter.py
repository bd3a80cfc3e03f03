"""Promptable segmentation with SAM: one shared, thread-safe segmenter for all sessions.

Conventions: images (H, W, 3) uint8 RGB; points (N, 2) float XY in pixels of the original
image; labels (N,) 1 = positive, 0 = negative; box (4,) XYXY pixels; masks (K, H, W) bool
at the original size. The image embedding is computed once per distinct image and kept
in a bounded LRU keyed by a hash of the pixels, so a second session with the same image,
or a repeated `set_image`, costs only the hash.
"""
from __future__ import annotations

import hashlib
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from core import config
from core.caches import BytesLRU
from core.sam.automask import AutoMaskSettings, AutoMasks, automatic_masks
from core.sam.precision import observe_click, precision_of


class PromptError(ValueError):
    """A prompt that cannot be used (outside the image, degenerate, empty), with a clear message."""


@dataclass(frozen=True)
class ImageEmbedding:
    """SAM's embedding of one image.

    key: content hash of the pixels; features: float32 tensor (1, 256, 64, 64) on the model's
    device; original_size: (H, W) of the image; input_size: (h, w) after resizing the longest
    side to the encoder's input size (1024).
    """

    key: str
    features: Any
    original_size: tuple[int, int]
    input_size: tuple[int, int]


@dataclass
class MaskPrediction:
    """Candidate masks for one prompt, best score first.

    masks: (K, H, W) bool; scores: (K,) float32 predicted IoU; logits: (K, 256, 256) float32
    low-resolution mask logits (can be fed back as `mask_input`).
    """

    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray


class PredictionCache(BytesLRU):
    """The last predictions per (image key, prompts), within `max_bytes`: a hover, the
    click on the same spot and the commit that follows ask SAM's decoder the same
    question, so only the first one runs it. Entries are shared, so their arrays are made
    read-only (a caller that wants to change a mask copies it first). Thread-safe; the
    least recently used entries go first."""

    def __init__(self, max_bytes: int):
        super().__init__(max_bytes, lambda p: p.masks.nbytes + p.scores.nbytes + p.logits.nbytes)

    @staticmethod
    def key(emb_key: str, points, box, multimask: bool) -> tuple:
        """(image key, points rounded to 1/1000 px with labels, box rounded, multimask)."""
        pts = () if points is None else tuple(
            (round(float(x), 3), round(float(y), 3), int(lab)) for (x, y), lab in zip(points[0], points[1]))
        bx = None if box is None else tuple(round(float(v), 3) for v in box)
        return emb_key, pts, bx, bool(multimask)

    def put(self, key: tuple, pred: MaskPrediction) -> bool:
        for array in (pred.masks, pred.scores, pred.logits):
            array.flags.writeable = False
        return super().put(key, pred)


def image_key(image: np.ndarray) -> str:
    """Content hash of an image array (shape, dtype and pixels)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{image.shape}{image.dtype}".encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


def validate_points(points, labels, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
    """Check (N, 2) XY points inside an image of size (H, W) and (N,) 0/1 labels."""
    if points is None or len(points) == 0:
        if labels is not None and len(labels):
            raise PromptError("labels were given without points")
        return None
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    lab = np.ones(len(pts), dtype=np.int64) if labels is None else np.asarray(labels).reshape(-1)
    if len(lab) != len(pts):
        raise PromptError(f"{len(pts)} points but {len(lab)} labels")
    if not np.isin(lab, (0, 1)).all():
        raise PromptError("point labels must be 1 (positive) or 0 (negative)")
    height, width = size
    for x, y in pts:
        if not (np.isfinite(x) and np.isfinite(y) and 0 <= x <= width and 0 <= y <= height):
            raise PromptError(f"point ({x:g}, {y:g}) is outside the image ({width}x{height})")
    return pts, lab.astype(np.int64)


def validate_box(box, size: tuple[int, int]) -> np.ndarray | None:
    """Check an XYXY box; clip it to the image of size (H, W); refuse empty or outside boxes."""
    if box is None:
        return None
    arr = np.asarray(box, dtype=np.float32).reshape(-1)
    if arr.size != 4 or not np.isfinite(arr).all():
        raise PromptError(f"a box needs 4 finite numbers X0,Y0,X1,Y1, got {list(arr)}")
    x0, y0, x1, y1 = arr
    x0, x1 = min(x0, x1), max(x0, x1)
    y0, y1 = min(y0, y1), max(y0, y1)
    height, width = size
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if cx1 - cx0 < 1 or cy1 - cy0 < 1:
        raise PromptError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is empty or outside the "
                          f"image ({width}x{height})")
    return np.array([cx0, cy0, cx1, cy1], dtype=np.float32)


class ClickPriority:
    """Clicks first: long jobs (image encodings, everything-mode runs) step aside while a
    click is being decoded.

    A 2-core machine cannot run an encoding and a click side by side without both slowing
    down (each wants every core). So every leaf module of SAM gets a forward pre-hook; in a
    thread marked as background (`background()`), the hook waits while any click is in
    progress (`click()`), at most `max_wait_s` per module so that a stream of clicks cannot
    starve an encoding. The click then has the cores to itself, and the encoding resumes at
    the module where it stopped (ViT-B's largest layers take ~0.1 s each here). Clicks and
    threads that are not marked never wait.
    """

    def __init__(self, max_wait_s: float = 0.25):
        self.max_wait_s = max_wait_s
        self._active = 0
        self._idle = threading.Condition()
        self._local = threading.local()
        self.yields = 0       # how often a background job stepped aside (for tests / stats)
        self._installed: weakref.WeakSet = weakref.WeakSet()

    def install(self, module) -> None:
        """Add the yield hook to every leaf module of `module` (a torch nn.Module), once."""
        for m in module.modules():
            if m not in self._installed and not any(True for _ in m.children()):
                m.register_forward_pre_hook(self._hook)
                self._installed.add(m)

    @contextmanager
    def click(self):
        """Mark a click in progress (background jobs wait at their next module)."""
        with self._idle:
            self._active += 1
        try:
            yield
        finally:
            with self._idle:
                self._active -= 1
                if not self._active:
                    self._idle.notify_all()

    @contextmanager
    def background(self):
        """Mark the calling thread's model calls as a background job that yields to clicks."""
        before = getattr(self._local, "background", False)
        self._local.background = True
        try:
            yield
        finally:
            self._local.background = before

    def _hook(self, module, args) -> None:
        if not self._active or not getattr(self._local, "background", False):
            return
        with self._idle:
            if self._active:
                self.yields += 1
                self._idle.wait_for(lambda: not self._active, timeout=self.max_wait_s)


#: One per process: a click on any model makes background work on every model step aside.
CLICK_PRIORITY = ClickPriority()


class Segmenter:
    """SAM wrapped for many users: cached embeddings, validated prompts, locks per kind of work.

    `sam` is a `segment_anything.modeling.Sam` (from `core.models.load_sam`); it is shared
    and never modified here. Three locks, so a cheap call never waits behind an expensive
    one: the encoder lock (one image encoding at a time), the decoder lock (clicks: prompt
    encoder + mask decoder on a cached embedding, ~20-30 ms) and the everything lock (one
    automatic-mask run at a time; it uses the decoder modules too, which only read their
    weights). The embedding cache has its own short lock: a lookup never waits for an
    encoding. Encodings and everything-mode runs also step aside while a click is decoded
    (`ClickPriority`: hooks on SAM's leaf modules, the only change made to the shared model),
    so a click does not share the cores with them. `encode_seconds` is the last measured
    encoder time on this machine.
    """

    def __init__(self, sam, cache_size: int | None = None):
        from segment_anything.utils.transforms import ResizeLongestSide

        self.sam = sam
        self.transform = ResizeLongestSide(sam.image_encoder.img_size)
        self.cache_size = cache_size or config.EMBED_CACHE_SIZE
        self._embeddings: BytesLRU[ImageEmbedding] = BytesLRU(self.cache_size, lambda emb: 1)   # by count
        self._encode_lock = threading.Lock()
        self._decode_lock = threading.Lock()
        self._everything_lock = threading.Lock()
        self.misses = 0
        self.decodes = 0                            # decoder runs for prompts (not cache hits)
        self.predictions = PredictionCache(config.PREDICTION_CACHE_MB * 1024 * 1024)
        self.encode_seconds: float | None = None   # last measured encoder time
        self.priority = CLICK_PRIORITY
        self.priority.install(sam)

    @property
    def encoding(self) -> bool:
        """True while an image is being encoded."""
        return self._encode_lock.locked()

    @property
    def device(self):
        return self.sam.device

    # -------------------------------------------------------------- embedding

    def set_image(self, image: np.ndarray) -> ImageEmbedding:
        """Embed an (H, W, 3) uint8 RGB image, or return its cached embedding."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}"
                             " (use core.io.images.load_image)")
        key = image_key(image)
        found = self.cached(key)
        if found is not None:
            return found
        with self._encode_lock:              # one encoding at a time; lookups do not wait
            found = self.cached(key)         # encoded by another session meanwhile
            if found is not None:
                return found
            start = time.perf_counter()
            with self.priority.background():
                emb = self._encode(image, key)
            self.encode_seconds = time.perf_counter() - start
            self.misses += 1
            self._embeddings.put(key, emb)
        return emb

    def cached(self, key: str) -> ImageEmbedding | None:
        """The cached embedding with content hash `key`, if any (counts a hit)."""
        return self._embeddings.get(key)

    @property
    def hits(self) -> int:
        """Lookups answered from the embedding cache."""
        return self._embeddings.hits

    def _encode(self, image: np.ndarray, key: str) -> ImageEmbedding:
        import torch

        resized = self.transform.apply_image(image)
        tensor = torch.as_tensor(resized, device=self.device).permute(2, 0, 1)[None].float()
        with torch.inference_mode():
            features = self.sam.image_encoder(self.sam.preprocess(tensor)).float()
        return ImageEmbedding(key, features, (image.shape[0], image.shape[1]),
                              (int(resized.shape[0]), int(resized.shape[1])))

    # -------------------------------------------------------------- prompts

    def predict(self, emb: ImageEmbedding, points=None, labels=None, box=None, *,
                multimask: bool | None = None, mask_input: np.ndarray | None = None) -> MaskPrediction:
        """Masks for a mix of positive/negative points and at most one box.

        multimask=None means: 3 candidates for a lone point (ambiguous), 1 otherwise.
        `mask_input` (1, 256, 256) float logits from a previous prediction refines it.
        Returns masks at the original image size, best score first. The same prompts on
        the same image (without `mask_input`) are answered from `self.predictions`.
        """
        pts = validate_points(points, labels, emb.original_size)
        bx = validate_box(box, emb.original_size)
        if pts is None and bx is None:
            raise PromptError("give at least one point or a box")
        if multimask is None:
            multimask = bx is None and pts is not None and len(pts[0]) == 1
        if mask_input is not None:
            return self._predict(emb, pts, bx, multimask, mask_input)
        key = self.predictions.key(emb.key, pts, bx, multimask)
        found = self.predictions.get(key)
        return found if found is not None else self._predict(emb, pts, bx, multimask, None, key)

    def _predict(self, emb: ImageEmbedding, pts, bx, multimask: bool, mask_input,
                 cache_key: tuple | None = None) -> MaskPrediction:
        """One decoder run on validated prompts (see `predict`). With `cache_key`, the
        cache is asked again once the decoder lock is held (a hover and the click on the
        same spot often arrive together: the second waits for the first's answer), and the
        answer is stored."""
        import torch

        coords = labels_t = box_t = mask_t = None
        if pts is not None:
            coords = torch.as_tensor(self.transform.apply_coords(pts[0], emb.original_size),
                                     dtype=torch.float32, device=self.device)[None]
            labels_t = torch.as_tensor(pts[1], dtype=torch.int64, device=self.device)[None]
        if bx is not None:
            box_t = torch.as_tensor(self.transform.apply_boxes(bx[None], emb.original_size),
                                    dtype=torch.float32, device=self.device)
        if mask_input is not None:
            mask_t = torch.as_tensor(np.asarray(mask_input, np.float32).reshape(1, 1, 256, 256),
                                     device=self.device)
        with self.priority.click(), self._decode_lock, torch.inference_mode():
            found = None if cache_key is None else self.predictions.get(cache_key)
            if found is not None:
                return found
            masks, scores, logits = self._decode(emb, coords, labels_t, box_t, mask_t, multimask)
            self.decodes += 1
            order = np.argsort(-scores, kind="stable")
            pred = MaskPrediction(masks[order], scores[order], logits[order])
            if cache_key is not None:
                self.predictions.put(cache_key, pred)
        return pred

    def _decode(self, emb, coords, labels, boxes, mask_input, multimask):
        sam = self.sam
        start = time.perf_counter()
        sparse, dense = sam.prompt_encoder(
            points=None if coords is None else (coords, labels), boxes=boxes, masks=mask_input)
        low_res, iou = sam.mask_decoder(
            image_embeddings=emb.features, image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
            multimask_output=multimask)
        if coords is not None and boxes is None and mask_input is None and coords.shape[1] == 1:
            # one point, as the precision probe's "click": its time checks the cached choice
            observe_click(precision_of(sam), time.perf_counter() - start)
        full = sam.postprocess_masks(low_res.float(), emb.input_size, emb.original_size)
        masks = (full > sam.mask_threshold)[0].cpu().numpy()
        return masks, iou[0].float().cpu().numpy(), low_res[0].float().cpu().numpy()

    # -------------------------------------------------------------- everything

    def everything(self, emb: ImageEmbedding, settings: AutoMaskSettings | None = None,
                   on_partial=None) -> AutoMasks:
        """All objects: automatic masks from a grid of point prompts (see core.sam.automask).

        settings: `core.sam.automask.AutoMaskSettings` (None: its defaults).
        on_partial: `core.sam.automask.PartialMasks`, called with the masks found so far.
        Returns `core.sam.automask.AutoMasks` (masks at the original size).
        """
        import torch

        cfg = settings or AutoMaskSettings()
        with self._everything_lock, self.priority.background(), torch.inference_mode():
            return automatic_masks(self.sam, emb.features, emb.original_size, emb.input_size, cfg,
                                   on_partial=on_partial)
