"""Choose one of N scored candidates by a direction word (the orientation paper's rule).

Among the ``top_k`` best-scored candidate boxes, the one lying furthest towards the
direction (by box centre) wins; an ordinal ("second from the left") counts inwards.

Conventions: boxes (N, 4) float XYXY pixels; ``image_hw`` is (height, width).
"""
from __future__ import annotations

import numpy as np

from core.refer.parse import DIRECTIONS

def _check_boxes_scores(boxes, scores) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(boxes, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be an (N, 4) XYXY array, got shape {b.shape}")
    if s.shape != (b.shape[0],):
        raise ValueError(f"scores must be (N,) with N = {b.shape[0]} boxes, got shape {s.shape}")
    if b.shape[0] == 0:
        raise ValueError("no candidates to choose from (0 boxes)")
    if not (np.isfinite(b).all() and np.isfinite(s).all()):
        raise ValueError("boxes and scores must be finite numbers")
    if np.any(b[:, 2] < b[:, 0]) or np.any(b[:, 3] < b[:, 1]):
        raise ValueError("boxes must be XYXY with x2 >= x1 and y2 >= y1")
    return b, s


def _check_image_hw(image_hw) -> tuple[float, float] | None:
    """(height, width) as floats, or None; ValueError on anything else."""
    if image_hw is None:
        return None
    try:
        h, w = (float(v) for v in image_hw)
    except (TypeError, ValueError):
        raise ValueError(f"image_hw must be (height, width), got {image_hw!r}") from None
    if not (w > 0 and h > 0 and np.isfinite(w) and np.isfinite(h)):
        raise ValueError(f"image_hw must be two positive numbers (height, width), got {image_hw!r}")
    return h, w


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _position_key(direction: str, boxes: np.ndarray, image_hw) -> np.ndarray:
    """(N,) float: smaller means further towards ``direction`` (by box centre).

    Corner directions add the two axes, each normalised by the image size (or, without one,
    by the extent of the boxes). ``center``: distance to the image centre, or without an
    image size to the median of the box centres (the middle one of a row).
    """
    cx = (boxes[:, 0] + boxes[:, 2]) / 2.0
    cy = (boxes[:, 1] + boxes[:, 3]) / 2.0
    if image_hw is not None:
        height, width = image_hw
    else:
        width = max(float(boxes[:, 2].max() - boxes[:, 0].min()), 1e-9)
        height = max(float(boxes[:, 3].max() - boxes[:, 1].min()), 1e-9)
    if direction == "center":
        if image_hw is not None:
            ref_x, ref_y = width / 2.0, height / 2.0
        else:
            ref_x, ref_y = float(np.median(cx)), float(np.median(cy))
        return np.hypot((cx - ref_x) / width, (cy - ref_y) / height)
    x, y = cx / width, cy / height
    keys = {
        "left": x, "right": -x, "top": y, "bottom": -y,
        "top-left": x + y, "top-right": -x + y, "bottom-left": x - y, "bottom-right": -x - y,
    }
    return keys[direction]


def direction_order(direction: str, boxes, scores, image_hw=None) -> np.ndarray:
    """Indices of ``boxes`` ordered from the ``direction`` side inwards (ties: higher score first).

    boxes: (N, 4) XYXY pixels; scores: (N,); image_hw: (height, width) or None.
    Returns (N,) int64; element 0 is the box furthest towards ``direction``.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; choose one of {DIRECTIONS}")
    b, s = _check_boxes_scores(boxes, scores)
    key = _position_key(direction, b, _check_image_hw(image_hw))
    return np.lexsort((np.arange(len(b)), -s, key)).astype(np.int64)


def choose(direction, boxes, scores, top_k=3, image_hw=None, ordinal=1) -> int:
    """Index of the candidate a referring expression points at.

    direction: one of :data:`DIRECTIONS` or None; boxes: (N, 4) float XYXY pixels;
    scores: (N,) higher is better; top_k: how many best-scored candidates the direction
    chooses among (None = all; raised to ``ordinal`` when smaller, so "third from the left"
    can be answered); image_hw: (height, width) or None; ordinal: 1 = the furthest towards
    the direction, 2 = the next one, ... (clamped to the number of candidates considered).

    No direction: the best score. Otherwise the box centres are compared (see
    :func:`direction_order`); ties in position and in score go to the higher score, then the
    lower index. Returns an int index into the N candidates. Raises ValueError on bad input.
    """
    b, s = _check_boxes_scores(boxes, scores)
    ordinal = check_positive_int(ordinal, "ordinal")
    hw = _check_image_hw(image_hw)
    by_score = np.lexsort((np.arange(len(s)), -s))  # best first, ties by index
    if direction is None:
        return int(by_score[0])
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; choose one of {DIRECTIONS} or None")
    k = len(s) if top_k is None else max(check_positive_int(top_k, "top_k"), ordinal)
    pool = by_score[:k]
    order = direction_order(direction, b[pool], s[pool], image_hw=hw)
    return int(pool[order[min(ordinal, len(pool)) - 1]])
