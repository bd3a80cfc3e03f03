"""Binary masks: COCO RLE (pycocotools-compatible), PNG, IoU, and COCO annotations.

Masks are (H, W) bool arrays; RLE dicts are COCO compressed RLE with a str `counts`
({"size": [H, W], "counts": "..."}), the form pycocotools and COCO JSON files use.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils


def mask_to_rle(mask: np.ndarray) -> dict:
    """Encode an (H, W) bool mask as COCO compressed RLE with a str `counts`."""
    mask = _as_mask(mask)
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: dict) -> np.ndarray:
    """Decode COCO RLE (compressed str/bytes or uncompressed list counts) to (H, W) bool."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError("an RLE must be a dict with 'size' [H, W] and 'counts'")
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        coded = mask_utils.frPyObjects(rle, height, width)
    else:
        coded = {"size": [height, width],
                 "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(coded).astype(bool)


def mask_to_png(mask: np.ndarray) -> bytes:
    """Encode an (H, W) bool mask as an 8-bit grayscale PNG (object 255, background 0)."""
    buf = io.BytesIO()
    Image.fromarray(_as_mask(mask).astype(np.uint8) * 255, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def png_to_mask(data: bytes) -> np.ndarray:
    """Decode a mask PNG (any mode; nonzero = object) to (H, W) bool."""
    pil = Image.open(io.BytesIO(data))
    return np.asarray(pil.convert("L")) > 0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (H, W) masks; 0.0 when both are empty."""
    a, b = _as_mask(a), _as_mask(b)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def intersection_and_union(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(|a & b|, |a | b|) in pixels, for cumulative IoU (oIoU)."""
    a, b = _as_mask(a), _as_mask(b)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    return int(np.logical_and(a, b).sum()), int(np.logical_or(a, b).sum())


def coco_ann_to_mask(ann: dict, height: int, width: int) -> np.ndarray:
    """Rasterise a COCO annotation's `segmentation` (polygons or RLE) to (H, W) bool."""
    seg = ann["segmentation"]
    if isinstance(seg, list):
        if not seg:
            raise ValueError(f"annotation {ann.get('id')} has an empty polygon list")
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")
               if isinstance(seg["counts"], str) else seg["counts"]}
    return mask_utils.decode(rle).astype(bool)


def box_to_mask(box, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool rectangle of an XYXY (x0, y0, x1, y1) box, x1/y1 exclusive (rounded outwards, clipped to size)."""
    height, width = size
    x0, y0, x1, y1 = (float(v) for v in box)
    mask = np.zeros((height, width), dtype=bool)
    mask[max(int(np.floor(y0)), 0):min(int(np.ceil(y1)), height),
         max(int(np.floor(x0)), 0):min(int(np.ceil(x1)), width)] = True
    return mask


def coco_box_to_xyxy(bbox) -> np.ndarray:
    """COCO [x, y, w, h] -> (4,) float32 XYXY (x0, y0, x1, y1), x1/y1 exclusive."""
    x, y, w, h = (float(v) for v in bbox)
    return np.array([x, y, x + w, y + h], dtype=np.float32)


def outer_edge(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """(H, W) bool: the pixels within `width` (>= 1) 4-neighbour steps outside an (H, W)
    bool mask (its dilation minus the mask), where an outline is drawn."""
    mask = np.asarray(mask, dtype=bool)
    grown = mask.copy()
    for _ in range(max(1, int(width))):
        step = grown.copy()
        step[1:] |= grown[:-1]
        step[:-1] |= grown[1:]
        step[:, 1:] |= grown[:, :-1]
        step[:, :-1] |= grown[:, 1:]
        grown = step
    return grown & ~mask


def _as_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be (H, W), not {mask.shape}")
    return mask.astype(bool, copy=False)
