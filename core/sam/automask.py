"""SAM's "everything" mode on a cached image embedding, fast on CPU.

Same recipe as segment_anything's ``SamAutomaticMaskGenerator`` (single crop):
a regular grid of positive point prompts, three candidate masks per point,
keep those with high predicted IoU and a stable threshold, remove duplicates
with box NMS, optionally clean small islands/holes. Differences, for speed:

* the image is never re-encoded: the cached (1, 256, 64, 64) embedding is used;
* prompts are decoded in batches and the predicted-IoU filter runs before
  any pixel work, so only masks that pass it are upsampled to the original
  size (stock upsamples every candidate first); stability score, boxes and
  NMS are then computed exactly as stock does, at the original size;
* candidate masks are kept bit-packed until NMS has picked the survivors;
* small-region cleanup uses a vectorised run-length connected-component
  labelling (8-connected, like stock's OpenCV call) instead of OpenCV.

Conventions: masks (N, H, W) bool at the original size; boxes (N, 4) float32
XYXY pixels of the original image with x1/y1 exclusive; points (N, 2) XY pixels.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple

import numpy as np

from core.views import masks_to_boxes

_NUMBER = (int, float, np.integer, np.floating)
_INTEGER = (int, np.integer)


@dataclass
class AutoMaskSettings:
    """Settings of the automatic mask generator (defaults sized for a 2-core CPU).

    points_per_side: the grid has points_per_side**2 positive point prompts
        (SAM's default is 32; 16 is 4x cheaper and finds the larger objects).
    points_per_batch: prompts decoded together; small batches keep the decoder's
        per-prompt tensors (4 MB each) in cache: 2 measured fastest on 2 cores
        (vit_b, 32x32 grid: 14.0 ms per prompt vs 14.7 at 1, 16.3 at 4, 21.0 at 8
        and 26.0 at 16).
    pred_iou_thresh: keep masks whose predicted IoU is above this (0 keeps all).
    stability_score_thresh: keep masks whose stability score (IoU of the mask
        thresholded at +offset and -offset) is at least this (0 keeps all).
    stability_score_offset: logit offset of the stability score.
    box_nms_thresh: box IoU above which the lower-scored mask is a duplicate.
    min_mask_region_area: islands and holes smaller than this many pixels (of
        the original image) are removed/filled; 0 switches the cleanup off.
    max_masks: keep at most this many masks, best first (None: no limit).
    """

    points_per_side: int = 16
    points_per_batch: int = 2
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    min_mask_region_area: int = 0
    max_masks: Optional[int] = None

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"AutoMaskSettings: {message}")

        need(isinstance(self.points_per_side, _INTEGER) and self.points_per_side >= 1,
             f"points_per_side must be an integer >= 1, got {self.points_per_side!r}")
        need(isinstance(self.points_per_batch, _INTEGER) and self.points_per_batch >= 1,
             f"points_per_batch must be an integer >= 1, got {self.points_per_batch!r}")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
            value = getattr(self, name)
            need(isinstance(value, _NUMBER) and 0.0 <= value <= 1.0,
                 f"{name} must be a number in [0, 1], got {value!r}")
        need(isinstance(self.stability_score_offset, _NUMBER) and self.stability_score_offset >= 0,
             f"stability_score_offset must be >= 0, got {self.stability_score_offset!r}")
        need(isinstance(self.min_mask_region_area, _INTEGER) and self.min_mask_region_area >= 0,
             f"min_mask_region_area must be an integer >= 0, got {self.min_mask_region_area!r}")
        need(self.max_masks is None or (isinstance(self.max_masks, _INTEGER) and self.max_masks >= 1),
             f"max_masks must be None or an integer >= 1, got {self.max_masks!r}")

    @classmethod
    def sam_defaults(cls) -> "AutoMaskSettings":
        """SAM's own defaults: 32x32 grid, IoU 0.88, stability 0.95, NMS 0.7."""
        return cls(points_per_side=32)


@dataclass
class AutoMasks:
    """Automatic masks of one image, best score first.

    masks: (N, H, W) bool at the original size; scores: (N,) float32 predicted
    IoU; boxes: (N, 4) float32 XYXY pixels (x1/y1 exclusive); stability: (N,)
    float32 stability scores; points: (N, 2) float32 XY pixels of the prompt
    that produced each mask.
    """

    masks: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    stability: Optional[np.ndarray] = None
    points: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.masks.shape[0])


# ----------------------------------------------------------------- pure helpers
def point_grid(points_per_side: int, size: Tuple[int, int]) -> np.ndarray:
    """Centres of an n x n grid of cells over an image of size (H, W): (n*n, 2) float32 XY pixels."""
    height, width = size
    offsets = (np.arange(points_per_side, dtype=np.float64) + 0.5) / points_per_side
    xs, ys = np.meshgrid(offsets * width, offsets * height)
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)


def coarse_to_fine(points_per_side: int) -> np.ndarray:
    """An order of the grid's row-major point indices, (n*n,) int64, that covers the whole
    image early: points on every 2^k-th row and column first (largest k first), then the
    finer ones; ties keep the row-major order. Everything mode decodes points in this order
    so that masks drawn while it runs are spread over the image, not stacked at its top."""
    n = int(points_per_side)
    rows, cols = np.divmod(np.arange(n * n), n)
    coarseness = np.zeros(n * n, dtype=np.int64)
    stride = 2
    while stride < n:
        coarseness += ((rows % stride == 0) & (cols % stride == 0)).astype(np.int64)
        stride *= 2
    return np.argsort(-coarseness, kind="stable")


def box_nms(boxes: np.ndarray, scores: np.ndarray, iou_thresh: float) -> np.ndarray:
    """Greedy NMS on (N, 4) XYXY boxes; returns kept indices, highest score first."""
    import torch
    from torchvision.ops import nms

    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    keep = nms(torch.as_tensor(boxes, dtype=torch.float32), torch.as_tensor(scores, dtype=torch.float32),
               float(iou_thresh))
    return keep.numpy()


def stability_scores(logits, threshold: float, offset: float):
    """IoU of (logits > threshold + offset) and (logits > threshold - offset) per mask: (N,) float32.

    logits: torch tensor (N, h, w). The first mask is inside the second, so
    IoU = area(high) / area(low); a mask empty at the low threshold scores 0.
    """
    import torch

    high = (logits > threshold + offset).flatten(1).sum(1, dtype=torch.int32)
    low = (logits > threshold - offset).flatten(1).sum(1, dtype=torch.int32)
    return torch.where(low > 0, high.float() / low.clamp(min=1).float(), torch.zeros_like(high, dtype=torch.float32))


def _row_runs(mask: np.ndarray):
    """Horizontal runs of True in an (H, W) bool mask: rows, starts, ends (exclusive), row-major order."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)
    rows, starts = np.nonzero(step == 1)
    _, ends = np.nonzero(step == -1)
    return rows, starts, ends


def _run_components(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """Component id of each run, 8-connectivity (runs in adjacent rows touching or diagonal)."""
    n = len(rows)
    parent = np.arange(n)
    if n == 0:
        return parent
    stride = width + 2
    key_start = rows * stride + starts
    key_end = rows * stride + ends
    # Run a in row r-1 touches run b in row r when a.end >= b.start and a.start <= b.end.
    above = (rows - 1) * stride
    lo = np.searchsorted(key_end, above + starts, side="left")
    hi = np.searchsorted(key_start, above + ends, side="right")
    counts = np.maximum(hi - lo, 0)
    b = np.repeat(np.arange(n), counts)
    a = np.repeat(lo, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    while len(a):
        pa, pb = parent[a], parent[b]
        small, big = np.minimum(pa, pb), np.maximum(pa, pb)
        joined = small != big
        if not joined.any():
            break
        np.minimum.at(parent, big[joined], small[joined])
        while True:  # pointer jumping until every run points at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    return parent


def _paint_runs(shape: Tuple[int, int], rows, starts, ends) -> np.ndarray:
    """(H, W) bool mask with the given runs set."""
    h, w = shape
    acc = np.zeros((h, w + 1), dtype=np.int32)
    np.add.at(acc, (rows, starts), 1)
    np.add.at(acc, (rows, ends), -1)
    return np.cumsum(acc, axis=1)[:, :w] > 0


def remove_small_regions(mask: np.ndarray, min_area: int, mode: str) -> Tuple[np.ndarray, bool]:
    """Fill holes ("holes") or drop islands ("islands") smaller than min_area pixels (8-connected).

    mask: (H, W) bool. Returns (new mask, changed). In "islands" mode the
    largest island is kept when every island is small (as stock SAM does).
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    mask = np.asarray(mask, dtype=bool)
    work = ~mask if mode == "holes" else mask
    rows, starts, ends = _row_runs(work)
    if len(rows) == 0:
        return mask, False
    comp = _run_components(rows, starts, ends, mask.shape[1])
    areas = np.bincount(comp, weights=ends - starts, minlength=len(comp))
    run_small = areas[comp] < min_area
    if not run_small.any():
        return mask, False
    if mode == "holes":
        filled = _paint_runs(mask.shape, rows[run_small], starts[run_small], ends[run_small])
        return mask | filled, True
    keep = ~run_small
    if not keep.any():
        keep = comp == np.argmax(areas)
    return _paint_runs(mask.shape, rows[keep], starts[keep], ends[keep]), True


# ----------------------------------------------------------------- pipeline stages
@dataclass
class _Candidates:
    """Masks that passed the filters, kept bit-packed until NMS has chosen the survivors."""

    packed: list = field(default_factory=list)  # (k, ceil(H*W/8)) uint8 per batch
    scores: list = field(default_factory=list)  # (k,) predicted IoU
    stability: list = field(default_factory=list)  # (k,)
    boxes: list = field(default_factory=list)  # (k, 4) XYXY exclusive
    points: list = field(default_factory=list)  # (k, 2) XY original pixels
    order: list = field(default_factory=list)  # (k,) grid point index * 3 + mask slot

    def __len__(self) -> int:
        return sum(len(s) for s in self.scores)

    def concat(self, name: str, empty: np.ndarray) -> np.ndarray:
        parts = getattr(self, name)
        return np.concatenate(parts) if parts else empty


def _check_inputs(sam, features, original_size, input_size) -> None:
    img = sam.image_encoder.img_size
    shape = tuple(getattr(features, "shape", ()))
    if len(shape) != 4 or shape[0] != 1:
        raise ValueError(f"features must be the (1, C, h, w) image embedding, got shape {shape}")
    if len(original_size) != 2 or min(original_size) < 1:
        raise ValueError(f"original_size must be (H, W) with positive sides, got {original_size}")
    if len(input_size) != 2 or min(input_size) < 1 or max(input_size) > img:
        raise ValueError(f"input_size must be (h, w) within the encoder size {img}, got {input_size}")


#: Attribute of a Sam holding a second mask decoder for batches of prompts: a fast copy in another
#: precision than ``sam.mask_decoder`` (``core.sam.fast_sam.accelerate_sam(batch_decoder_dtype=...)``).
BATCH_DECODER = "batch_mask_decoder"


def batch_decoder(sam):
    """The mask decoder for batches of prompts: ``sam.batch_mask_decoder`` when present, else
    ``sam.mask_decoder`` (load_sam makes the copy where bf16 measured faster for batches only)."""
    found = getattr(sam, BATCH_DECODER, None)
    return sam.mask_decoder if found is None else found


def decode_point_batch(sam, features, dense_pe, coords):
    """Three candidate masks per positive point: coords (B, 2) float32 XY in the resized input frame.

    Runs `batch_decoder(sam)`.
    Returns (logits (B*3, 256, 256) float32, predicted IoU (B*3,) float32), torch tensors.
    """
    import torch

    labels = torch.ones(coords.shape[0], 1, dtype=torch.int64, device=coords.device)
    sparse, dense = sam.prompt_encoder(points=(coords[:, None, :], labels), boxes=None, masks=None)
    logits, iou = batch_decoder(sam)(image_embeddings=features, image_pe=dense_pe,
                                   sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                   multimask_output=True)
    return logits.flatten(0, 1).float(), iou.flatten(0, 1).float()


def upsample_logits(sam, logits, input_size, original_size):
    """Low-res logits (N, 256, 256) -> (N, H, W) float32 logits at the original size (SAM's postprocess)."""
    return sam.postprocess_masks(logits[:, None].float(), tuple(input_size), tuple(original_size))[:, 0]


def _filter_batch(sam, logits, iou, prompts, point_ids, cfg: AutoMaskSettings, input_size, original_size,
                  out: _Candidates, chunk: int = 16) -> None:
    """Stock SAM's per-batch filters, upsampling only the masks that pass the IoU filter.

    Predicted IoU first (no pixels needed), then the stability score and the
    boxes on the logits at the original size, as stock SAM computes them.
    prompts (B, 2) XY pixels; point_ids (B,) their row-major grid indices.
    """
    import torch

    threshold = float(sam.mask_threshold)
    keep = torch.nonzero(iou > cfg.pred_iou_thresh).flatten() if cfg.pred_iou_thresh > 0 \
        else torch.arange(len(iou), device=iou.device)
    for i in range(0, len(keep), chunk):
        idx = keep[i:i + chunk]
        full = upsample_logits(sam, logits[idx], input_size, original_size)
        stab = stability_scores(full, threshold, cfg.stability_score_offset)
        if cfg.stability_score_thresh > 0:
            ok = stab >= cfg.stability_score_thresh
            if not bool(ok.any()):
                continue
            if not bool(ok.all()):  # else no boolean-index copy of the full-size logits
                full, idx, stab = full[ok], idx[ok], stab[ok]
        masks = (full > threshold).cpu().numpy()
        del full
        sel = idx.cpu().numpy()
        out.packed.append(np.packbits(masks.reshape(len(masks), -1), axis=1))
        out.scores.append(iou[idx].cpu().numpy().astype(np.float32))
        out.stability.append(stab.cpu().numpy().astype(np.float32))
        out.boxes.append(masks_to_boxes(masks))
        out.points.append(prompts[sel // 3])
        out.order.append(point_ids[sel // 3] * 3 + sel % 3)


def _unpack(packed: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    h, w = size
    if len(packed) == 0:
        return np.zeros((0, h, w), dtype=bool)
    return np.unpackbits(packed, axis=1, count=h * w).reshape(-1, h, w).astype(bool)


def _inclusive(boxes: np.ndarray) -> np.ndarray:
    """XYXY exclusive -> inclusive pixel boxes (what stock SAM feeds to NMS)."""
    return boxes - np.array([0, 0, 1, 1], dtype=np.float32)


def _clean_small_regions(masks, scores, min_area: int, nms_thresh: float):
    """Stock SAM's post-processing: fill small holes, drop small islands, re-run NMS preferring unchanged masks."""
    changed = np.zeros(len(masks), dtype=bool)
    for i in range(len(masks)):
        masks[i], c1 = remove_small_regions(masks[i], min_area, "holes")
        masks[i], c2 = remove_small_regions(masks[i], min_area, "islands")
        changed[i] = c1 or c2
    boxes = _inclusive(masks_to_boxes(masks))
    keep = box_nms(boxes, (~changed).astype(np.float32) + scores * 1e-3, nms_thresh)
    return np.sort(keep)


#: Callback of `automatic_masks` for masks found so far: (provisional AutoMasks, fraction done).
PartialMasks = Callable[[AutoMasks, float], None]


def _select(cand: _Candidates, cfg: AutoMaskSettings, size: Tuple[int, int]):
    """The candidates' NMS survivors in stock SAM's order (grid point, then mask slot), capped
    at max_masks: (masks (N, H, W) bool, scores, boxes, stability, points)."""
    order = np.argsort(cand.concat("order", np.zeros(0, np.int64)), kind="stable")
    scores = cand.concat("scores", np.zeros(0, np.float32))[order]
    boxes = cand.concat("boxes", np.zeros((0, 4), np.float32))[order]
    keep = box_nms(_inclusive(boxes), scores, cfg.box_nms_thresh)
    if cfg.max_masks is not None:
        keep = keep[:cfg.max_masks]
    picked = order[keep]
    masks = _unpack(cand.concat("packed", np.zeros((0, 0), np.uint8))[picked], size)
    stability = cand.concat("stability", np.zeros(0, np.float32))[picked]
    prompts = cand.concat("points", np.zeros((0, 2), np.float32))[picked]
    return masks, scores[keep], boxes[keep], stability, prompts


def _best_first(masks, scores, boxes, stability, prompts) -> AutoMasks:
    """Non-empty masks sorted by predicted IoU, best first (stable)."""
    nonempty = masks.any(axis=(1, 2))
    order = np.argsort(-scores[nonempty], kind="stable")
    pick = np.nonzero(nonempty)[0][order]
    return AutoMasks(masks=masks[pick], scores=scores[pick].astype(np.float32), boxes=boxes[pick],
                     stability=stability[pick], points=prompts[pick].astype(np.float32))


def automatic_masks(sam, features, original_size, input_size, settings: Optional[AutoMaskSettings] = None,
                    on_partial: Optional[PartialMasks] = None, partial_every_s: float = 0.4) -> AutoMasks:
    """All objects in an image from its cached SAM embedding ("everything" mode).

    sam: segment_anything Sam (stock or accelerated); features: float32 tensor
    (1, 256, 64, 64) on the model's device; original_size: (H, W) of the
    image; input_size: (h, w) after resizing the longest side to
    sam.image_encoder.img_size. Call under torch.inference_mode().
    on_partial: called with the masks found so far (NMS applied, small regions not yet
    cleaned) and the fraction of the grid decoded, at most every `partial_every_s` seconds
    while it runs; the points are decoded coarse to fine (`coarse_to_fine`), so these spread
    over the image. The result does not depend on it (candidates are put back in grid order).
    Returns AutoMasks sorted by predicted IoU, best first.
    """
    import torch

    cfg = settings if settings is not None else AutoMaskSettings()
    if not isinstance(cfg, AutoMaskSettings):
        raise TypeError(f"settings must be AutoMaskSettings, got {type(cfg).__name__}")
    _check_inputs(sam, features, original_size, input_size)
    size = (int(original_size[0]), int(original_size[1]))
    in_size = (int(input_size[0]), int(input_size[1]))

    ids = coarse_to_fine(cfg.points_per_side)
    points = point_grid(cfg.points_per_side, size)
    to_input = np.array([in_size[1] / size[1], in_size[0] / size[0]], dtype=np.float32)
    dense_pe = sam.prompt_encoder.get_dense_pe()
    cand = _Candidates()
    last_partial, reported = time.perf_counter(), 0
    for i in range(0, len(ids), cfg.points_per_batch):
        batch_ids = ids[i:i + cfg.points_per_batch]
        batch = points[batch_ids]
        coords = torch.as_tensor(batch * to_input, dtype=torch.float32, device=features.device)
        logits, iou = decode_point_batch(sam, features, dense_pe, coords)
        _filter_batch(sam, logits, iou, batch, batch_ids, cfg, in_size, size, cand)
        if on_partial is not None and len(cand) > reported and time.perf_counter() - last_partial >= partial_every_s:
            on_partial(_best_first(*_select(cand, cfg, size)), (i + len(batch_ids)) / len(ids))
            last_partial, reported = time.perf_counter(), len(cand)

    masks, scores, boxes, stability, prompts = _select(cand, cfg, size)
    if cfg.min_mask_region_area > 0 and len(masks):
        kept = _clean_small_regions(masks, scores, cfg.min_mask_region_area, cfg.box_nms_thresh)
        masks, scores, stability, prompts = masks[kept], scores[kept], stability[kept], prompts[kept]
        boxes = masks_to_boxes(masks)
    return _best_first(masks, scores, boxes, stability, prompts)
