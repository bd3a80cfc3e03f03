"""Brush and eraser strokes on a selection mask, at the image's working resolution.

The browser sends one compact record per stroke (never a full image):

    {"mode": "paint" | "erase", "radius": 6, "points": [[x, y], [x, y], ...]}

Coordinates are image pixels at the working resolution (x right, y down; pixel (col, row) has
its centre at x = col, y = row, as OpenCV draws); radius is in the same pixels. A stroke covers
every pixel within about `radius` of its polyline: OpenCV thick lines (round caps) for each
segment plus a disc at each vertex (round joins, and a dot for a one-point stroke). Pixels that
fall outside the image are dropped (clipped); points farther than one image size outside are
clamped there. Painting with no current mask starts a new one; erasing with none gives an
empty mask.

Prompting again after an edit (new points, a box, another candidate): the strokes of the
selection are kept and re-applied, in order, on top of the new SAM mask (`edited_mask`), so an
edit is never silently thrown away; "Clear" (or `Selection.without_strokes`) drops them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import cv2
import numpy as np

MODES = ("paint", "erase")
MAX_POINTS = 20_000       # points in one stroke
MAX_STROKES = 2_000       # strokes on one selection
SHIFT = 4                 # OpenCV fixed-point bits: points are drawn at 1/16 pixel


@dataclass(frozen=True)
class Stroke:
    """One brush or eraser stroke. mode: "paint" or "erase"; radius: image pixels (> 0);
    points: ((x, y), ...) float image pixels at the working resolution, at least one."""

    mode: str
    radius: float
    points: tuple[tuple[float, float], ...]

    def to_record(self) -> dict:
        """The compact JSON-able record (what `parse_stroke` reads)."""
        return {"mode": self.mode, "radius": self.radius, "points": [list(p) for p in self.points]}

    @property
    def nbytes(self) -> int:
        """Approximate bytes held (two floats per point plus overhead)."""
        return 16 * len(self.points) + 100


def max_radius(shape: tuple[int, int]) -> float:
    """The largest brush radius accepted on an image of (H, W): its longer side."""
    return float(max(shape))


def parse_stroke(record, shape: tuple[int, int]) -> Stroke:
    """A validated Stroke from the browser's record for an image of shape (H, W).
    ValueError with a clear message on a bad mode, radius or point list."""
    if not isinstance(record, dict):
        raise ValueError("a stroke must be an object {mode, radius, points}")
    mode = record.get("mode")
    if mode not in MODES:
        raise ValueError(f"a stroke's mode must be 'paint' or 'erase', not {mode!r}")
    radius = _number(record.get("radius"), "radius")
    if not 0 < radius <= max_radius(shape):
        raise ValueError(f"a brush radius must be in (0, {max_radius(shape):g}] pixels, not {radius:g}")
    points = record.get("points")
    if not isinstance(points, (list, tuple)) or not points:
        raise ValueError("a stroke needs at least one point [x, y]")
    if len(points) > MAX_POINTS:
        raise ValueError(f"a stroke has at most {MAX_POINTS} points, not {len(points)}")
    height, width = int(shape[0]), int(shape[1])
    return Stroke(mode, radius, tuple(_point(p, height, width) for p in points))


def parse_strokes(records, shape: tuple[int, int]) -> list[Stroke]:
    """Several stroke records (a list) parsed and validated; at most MAX_STROKES."""
    if not isinstance(records, (list, tuple)):
        raise ValueError("strokes must be a list of {mode, radius, points}")
    if len(records) > MAX_STROKES:
        raise ValueError(f"at most {MAX_STROKES} strokes on one selection, not {len(records)}")
    return [parse_stroke(r, shape) for r in records]


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"a stroke's {what} must be a finite number, not {value!r}")
    return float(value)


def _point(p, height: int, width: int) -> tuple[float, float]:
    """(x, y) floats, clamped to one image size beyond each border."""
    if not isinstance(p, (list, tuple)) or len(p) != 2:
        raise ValueError(f"a stroke point must be [x, y], not {p!r}")
    x, y = _number(p[0], "point x"), _number(p[1], "point y")
    return (min(max(x, -width), 2.0 * width), min(max(y, -height), 2.0 * height))


def rasterise(stroke: Stroke, shape: tuple[int, int]) -> np.ndarray:
    """The pixels a stroke covers on an image of shape (H, W): (H, W) bool, clipped."""
    canvas = np.zeros((int(shape[0]), int(shape[1])), np.uint8)
    scale = 1 << SHIFT
    pts = np.round(np.asarray(stroke.points, np.float64) * scale).astype(np.int64)
    thickness = max(1, int(round(2 * stroke.radius)))
    radius = max(0, int(round(stroke.radius * scale)))
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        cv2.line(canvas, (int(x0), int(y0)), (int(x1), int(y1)), 1, thickness, cv2.LINE_8, SHIFT)
    for x, y in pts:
        cv2.circle(canvas, (int(x), int(y)), radius, 1, -1, cv2.LINE_8, SHIFT)
    return canvas.astype(bool)


def apply_stroke(mask: np.ndarray | None, stroke: Stroke, shape: tuple[int, int]) -> np.ndarray:
    """The mask after one stroke: paint adds its pixels, erase removes them. mask: (H, W) bool
    or None (no selection yet: painting starts a new mask). Returns a new (H, W) bool array."""
    base = np.zeros(tuple(shape), bool) if mask is None else np.array(mask, dtype=bool)
    if base.shape != tuple(shape):
        raise ValueError(f"a {base.shape} mask does not fit a {tuple(shape)} image")
    covered = rasterise(stroke, shape)
    if stroke.mode == "paint":
        base |= covered
    else:
        base &= ~covered
    return base


def apply_strokes(mask: np.ndarray | None, strokes: Iterable[Stroke], shape: tuple[int, int]) -> np.ndarray | None:
    """The mask after strokes in order; returns `mask` unchanged (maybe None) when there are none."""
    out = mask
    for stroke in strokes:
        out = apply_stroke(out, stroke, shape)
    return out


def edited_mask(sam_mask: np.ndarray | None, strokes: Iterable[Stroke], shape: tuple[int, int]) -> np.ndarray | None:
    """What a selection shows after prompting again: the new SAM mask ((H, W) bool or None)
    with the selection's strokes re-applied on top, in order (the documented rule)."""
    return apply_strokes(sam_mask, strokes, shape)
