"""Brush and eraser strokes on a mask, at the working image's resolution.

A stroke record (what the browser sends at pointer-up) is compact:
``{"mode": "paint" | "erase", "radius": r, "points": [[x, y], ...]}`` with x, y and r in
working-image pixels (x to the right, y down). A pixel (row i, column j) is covered when
its centre (j + 0.5, i + 0.5) lies within `radius` of the polyline (a single point: a
disc). The browser (demo/canvas_brush.js) rasterises with the same rule, so the canvas
and the server agree. Points outside the image are allowed; the result is clipped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

#: Limits on one stroke record and on a list of them (bad or hostile input is refused).
MAX_POINTS = 5000
MAX_STROKES = 500
MAX_RADIUS = 1000.0


@dataclass(frozen=True)
class Stroke:
    """One stroke: mode "paint" (adds) or "erase" (removes); radius in working pixels;
    points (N, 2) float64 XY in working pixels, N >= 1."""

    mode: Literal["paint", "erase"]
    radius: float
    points: np.ndarray


def parse_stroke(record: dict) -> Stroke:
    """A `Stroke` from the browser's record; ValueError with a readable message if bad."""
    if not isinstance(record, dict):
        raise ValueError("A stroke must be an object with mode, radius and points.")
    mode = record.get("mode")
    if mode not in ("paint", "erase"):
        raise ValueError("A stroke's mode must be 'paint' or 'erase'.")
    try:
        radius = float(record.get("radius"))
        pts = np.asarray(record.get("points"), dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("A stroke needs a numeric radius and points [[x, y], ...].") from None
    if not np.isfinite(radius) or not 0.5 <= radius <= MAX_RADIUS:
        raise ValueError(f"A stroke's radius must be between 0.5 and {MAX_RADIUS:g} pixels.")
    if pts.ndim != 2 or pts.shape[1] != 2 or not 1 <= len(pts) <= MAX_POINTS:
        raise ValueError(f"A stroke needs 1 to {MAX_POINTS} points [x, y].")
    if not np.isfinite(pts).all():
        raise ValueError("A stroke's points must be finite numbers.")
    return Stroke(mode, radius, pts)


def parse_strokes(records) -> list[Stroke]:
    """A list of stroke records (None: none)."""
    if records is None:
        return []
    if not isinstance(records, list) or len(records) > MAX_STROKES:
        raise ValueError(f"Strokes must be a list of at most {MAX_STROKES}.")
    return [parse_stroke(r) for r in records]


def stroke_footprint(stroke: Stroke, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the pixels `stroke` covers on an image of `size` (H, W), clipped."""
    h, w = size
    out = np.zeros((h, w), dtype=bool)
    pts, r = stroke.points, stroke.radius
    segments = zip(pts, pts[1:]) if len(pts) > 1 else [(pts[0], pts[0])]
    for a, b in segments:
        x0 = int(max(0, np.floor(min(a[0], b[0]) - r)))
        x1 = int(min(w, np.ceil(max(a[0], b[0]) + r) + 1))
        y0 = int(max(0, np.floor(min(a[1], b[1]) - r)))
        y1 = int(min(h, np.ceil(max(a[1], b[1]) + r) + 1))
        if x0 >= x1 or y0 >= y1:
            continue
        px = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5
        py = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5
        d = b - a
        length2 = float(d @ d)
        t = 0.0 if length2 == 0 else np.clip(((px - a[0]) * d[0] + (py - a[1]) * d[1]) / length2, 0, 1)
        dist2 = (px - (a[0] + t * d[0])) ** 2 + (py - (a[1] + t * d[1])) ** 2
        out[y0:y1, x0:x1] |= dist2 <= r * r
    return out


def apply_stroke(mask: np.ndarray, stroke: Stroke) -> np.ndarray:
    """A new (H, W) bool mask: `mask` with `stroke` painted or erased."""
    cover = stroke_footprint(stroke, mask.shape[:2])
    return (mask | cover) if stroke.mode == "paint" else (mask & ~cover)


def apply_strokes(mask: np.ndarray, strokes: list[Stroke]) -> np.ndarray:
    """`mask` (H, W) bool with every stroke applied in order (the input is not changed)."""
    out = np.asarray(mask, dtype=bool).copy()
    for s in strokes:
        out = apply_stroke(out, s)
    return out
