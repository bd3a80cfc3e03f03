"""Pictures the UI shows: mask overlays, prompt markers, outlines, colour maps, thumbnails.

numpy + PIL only. Conventions: images are (H, W, 3) uint8 RGB; masks (H, W) bool;
boxes (4,) XYXY (x0, y0, x1, y1) float pixels of the image, x1/y1 exclusive; points (x, y) pixels.
Every function returns a new array and leaves its inputs untouched.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

#: Colour of the selected object's overlay (RGB).
SELECTED_COLOR = (30, 144, 255)
POSITIVE_COLOR = (0, 200, 70)
NEGATIVE_COLOR = (235, 40, 40)
BOX_COLOR = (255, 200, 0)


def _check_image(image: np.ndarray) -> None:
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
            and image.dtype == np.uint8):
        got = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {got}")


def _check_mask(mask: np.ndarray, image: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image size {image.shape[:2]}")
    return mask.astype(bool, copy=False)


def mask_boundary(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixels of `mask` (H, W) bool that touch a pixel outside it (4-neighbourhood),
    grown inwards to `width` pixels. Returns (H, W) bool."""
    mask = np.asarray(mask, dtype=bool)
    inner = mask.copy()
    for _ in range(max(1, int(width))):
        padded = np.pad(inner, 1, constant_values=False)
        inner = (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1]
                 & padded[1:-1, :-2] & padded[1:-1, 2:])
    return mask & ~inner


def _line_width(image: np.ndarray) -> int:
    return max(2, round(max(image.shape[:2]) / 250))


def overlay_mask(image: np.ndarray, mask: np.ndarray, color: Sequence[int] = SELECTED_COLOR,
                 alpha: float = 0.45, outline: bool = True) -> np.ndarray:
    """Tint the pixels of `mask` with `color` (weight `alpha`) and draw its outline.

    image (H, W, 3) uint8, mask (H, W) bool -> (H, W, 3) uint8."""
    _check_image(image)
    mask = _check_mask(mask, image)
    out = image.astype(np.float32)
    tint = np.asarray(color, dtype=np.float32)
    out[mask] = (1.0 - alpha) * out[mask] + alpha * tint
    if outline:
        out[mask_boundary(mask, _line_width(image))] = tint
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def outline_mask(image: np.ndarray, mask: np.ndarray, color: Sequence[int] = SELECTED_COLOR,
                 dim: float = 0.35) -> np.ndarray:
    """Darken everything outside `mask` by `dim` and draw its outline; the object itself
    keeps its pixels. (H, W, 3) uint8 -> (H, W, 3) uint8."""
    _check_image(image)
    mask = _check_mask(mask, image)
    out = image.astype(np.float32)
    out[~mask] *= 1.0 - dim
    out[mask_boundary(mask, _line_width(image))] = np.asarray(color, dtype=np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def palette(n: int, seed: int = 0) -> np.ndarray:
    """`n` distinct, saturated RGB colours, (n, 3) uint8, the same for the same (n, seed)."""
    if n <= 0:
        return np.zeros((0, 3), dtype=np.uint8)
    golden = 0.618033988749895
    hues = (seed * 0.13 + np.arange(n) * golden) % 1.0
    hsv = np.stack([hues * 255, np.full(n, 200), np.full(n, 235)], axis=1).astype(np.uint8)
    rgb = Image.fromarray(hsv[None], mode="HSV").convert("RGB")
    return np.asarray(rgb)[0]


def overlay_masks(image: np.ndarray, masks: np.ndarray, alpha: float = 0.5,
                  highlight: int | None = None) -> np.ndarray:
    """Paint each of `masks` (N, H, W) bool in its own colour, largest first so small
    objects stay visible on top; `highlight` (an index) is drawn last with a white outline.
    Returns (H, W, 3) uint8."""
    _check_image(image)
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3 or masks.shape[1:] != image.shape[:2]:
        raise ValueError(f"masks shape {masks.shape} does not match image size {image.shape[:2]}")
    out = image.astype(np.float32)
    colors = palette(len(masks)).astype(np.float32)
    areas = masks.reshape(len(masks), -1).sum(axis=1)
    for i in np.argsort(-areas, kind="stable"):
        if highlight is not None and i == highlight:
            continue
        m = masks[i]
        out[m] = (1.0 - alpha) * out[m] + alpha * colors[i]
        out[mask_boundary(m)] = colors[i]
    if highlight is not None and 0 <= highlight < len(masks):
        m = masks[highlight]
        out[m] = (1.0 - alpha) * out[m] + alpha * np.asarray(SELECTED_COLOR, np.float32)
        out[mask_boundary(m, _line_width(image))] = 255.0
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def draw_prompts(image: np.ndarray, points: Sequence[Sequence[float]] = (),
                 labels: Sequence[int] = (), box: Sequence[float] | None = None,
                 corner: Sequence[float] | None = None) -> np.ndarray:
    """Draw point prompts (green dot = positive label 1, red dot with a bar = negative
    label 0), a box (XYXY) and a pending box corner (a cross) on a copy of `image`."""
    _check_image(image)
    if len(points) != len(labels):
        raise ValueError(f"{len(points)} points but {len(labels)} labels")
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    lw = _line_width(image)
    radius = max(4, round(max(image.shape[:2]) / 80))
    if box is not None:
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=BOX_COLOR, width=lw)
    if corner is not None:
        cx, cy = (float(v) for v in corner)
        draw.line([cx - 2 * radius, cy, cx + 2 * radius, cy], fill=BOX_COLOR, width=lw)
        draw.line([cx, cy - 2 * radius, cx, cy + 2 * radius], fill=BOX_COLOR, width=lw)
    for (x, y), label in zip(points, labels):
        color = POSITIVE_COLOR if int(label) == 1 else NEGATIVE_COLOR
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color,
                     outline=(255, 255, 255), width=max(1, lw // 2))
        if int(label) != 1:
            draw.line([x - radius * 0.6, y, x + radius * 0.6, y], fill=(255, 255, 255), width=lw)
    return np.asarray(pil)


def thumbnail(image: np.ndarray, max_side: int = 256) -> np.ndarray:
    """Downscale (H, W, 3) uint8 so its longer side is at most `max_side`; never upscales."""
    _check_image(image)
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image.copy()
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
