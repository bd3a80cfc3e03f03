"""Masks <-> polygons, with OpenCV (contours, filling) and pycocotools (COCO rasterising).

Two coordinate conventions, because the usual readers differ:
- **corners** (COCO): x, y are pixel-corner coordinates, pixel (r, c) covers [c, c+1) x
  [r, r+1); pycocotools rasterises a polygon to the pixels whose centre it contains. Our
  contours follow the pixels' outer edges (OpenCV's contour through boundary pixel centres,
  pushed out by half a pixel), so a mask survives the round trip.
- **centres** (YOLO, LabelMe): x, y are pixel indices; readers fill with OpenCV's fillPoly
  (Ultralytics, supervision) or PIL's ImageDraw.polygon (labelme), both of which include the
  boundary pixels: OpenCV's contour itself is the right polygon.

Polygons are (K, 2) float64 arrays of x, y. Holes are not kept (outer contours only); the
RLE and PNG formats are exact.
"""
from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as mask_utils

HALF = 0.5


def contours(mask: np.ndarray) -> list[np.ndarray]:
    """Outer contours of an (H, W) bool mask: (K, 2) int arrays of pixel indices x, y."""
    found, _ = cv2.findContours(np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL,
                                cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1, 2) for c in found]


def mask_to_polygons(mask: np.ndarray, corners: bool = True) -> list[np.ndarray]:
    """Polygons (K, 2) float64 x, y of an (H, W) bool mask's parts (see the module docstring
    for `corners`); [] for an empty mask."""
    mask = np.asarray(mask, dtype=bool)
    found = contours(mask)
    if not corners:
        return [c.astype(np.float64) for c in found]
    return [_outer_edge_polygon(c) for c in found]


def _shoelace(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)) / 2.0


def _outer_edge_polygon(contour: np.ndarray) -> np.ndarray:
    """The pixel-corner polygon around an OpenCV contour (pixel centres): each vertex pushed
    half a pixel outwards (mitred; square caps at turns sharper than 120 degrees)."""
    pts = contour.astype(np.float64) + HALF                 # centres in corner coordinates
    area = _shoelace(pts)
    if len(pts) < 3 or abs(area) < 1e-9:                    # a point or a 1-pixel-wide line
        lo, hi = contour.min(axis=0), contour.max(axis=0) + 1
        return np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]], dtype=np.float64)
    sign = 1.0 if area > 0 else -1.0
    edges = np.roll(pts, -1, axis=0) - pts                  # edge i: pts[i] -> pts[i+1]
    lengths = np.linalg.norm(edges, axis=1, keepdims=True)
    keep = lengths[:, 0] > 0
    pts, edges, lengths = pts[keep], edges[keep], lengths[keep]
    units = edges / lengths
    normals = sign * np.stack([units[:, 1], -units[:, 0]], axis=1)  # outward normal of each edge
    out = []
    for i in range(len(pts)):
        n_in, n_out = normals[i - 1], normals[i]
        cos = float(np.dot(n_in, n_out))
        if cos > -0.5:
            out.append(pts[i] + HALF * (n_in + n_out) / (1.0 + cos))
        else:                                               # a spike: square cap
            out.append(pts[i] + HALF * n_in + HALF * units[i - 1])
            out.append(pts[i] + HALF * n_out - HALF * units[i])
    return np.array(out, dtype=np.float64)


def polygons_to_mask(polygons: list, height: int, width: int, corners: bool = True) -> np.ndarray:
    """(H, W) bool union of polygons ((K, 2) x, y arrays or flat [x0, y0, x1, ...] lists):
    pycocotools for corner coordinates, OpenCV's fillPoly (rounded) for centre coordinates."""
    rings = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons]
    rings = [r for r in rings if len(r) >= 1]
    if not rings:
        return np.zeros((height, width), dtype=bool)
    if corners:
        flat = [r.ravel().tolist() for r in rings if len(r) >= 3]
        if not flat:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(flat, height, width))
        return mask_utils.decode(rle).astype(bool)
    canvas = np.zeros((height, width), dtype=np.uint8)
    cv2.fillPoly(canvas, [np.round(r).astype(np.int32) for r in rings], 1)
    return canvas.astype(bool)


def join_parts(polygons: list[np.ndarray]) -> np.ndarray:
    """One ring through every part (for formats with one polygon per object, YOLO-seg): each
    further part is entered from the nearest vertex of the ring so far and left the same way
    (a zero-width bridge, as Ultralytics does for multi-part COCO objects)."""
    if not polygons:
        return np.zeros((0, 2), dtype=np.float64)
    ring = np.asarray(polygons[0], dtype=np.float64)
    for part in polygons[1:]:
        part = np.asarray(part, dtype=np.float64)
        dist = np.linalg.norm(ring[:, None, :] - part[None, :, :], axis=2)
        i, j = np.unravel_index(int(np.argmin(dist)), dist.shape)
        loop = np.concatenate([part[j:], part[:j + 1]])     # around the part, back to its entry
        ring = np.concatenate([ring[:i + 1], loop, ring[i:]])
    return ring
