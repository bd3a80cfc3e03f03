"""Object views: pure functions (image, mask) -> object image, named so UI and evaluation agree.

All take `image` (H, W, 3) uint8 RGB and `mask` (H, W) bool of the same size and return
a new (h, w, 3) uint8 image. The two views of the object-retrieval paper are `mask`
(full frame, background black) and `crop` (the mask's bounding box). The others are
visual prompts in the spirit of CLIPSeg: the object cropped on black, with a context
margin, and with the background dimmed or blurred.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

CONTEXT_MARGIN = 0.2  #: margin around the box, as a fraction of its longer side
DIM_FACTOR = 0.3  #: brightness kept in the background of the `dim` view
BLUR_FRACTION = 0.03  #: blur radius of the `blur` view, as a fraction of the crop's longer side


def mask_to_box(mask: np.ndarray) -> np.ndarray:
    """Tight box of an (H, W) bool mask: (4,) float32 XYXY (x0, y0, x1, y1),
    x1/y1 exclusive. ValueError if empty."""
    mask = np.asarray(mask, dtype=bool)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("the mask is empty: no object pixels")
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight boxes of (N, H, W) bool masks: (N, 4) float32 XYXY (x0, y0, x1, y1),
    x1/y1 exclusive ((0, 4) for none). An empty mask gets [0, 0, 0, 0] (a box of no area) where `mask_to_box` raises:
    a batch of candidates keeps its order and length."""
    masks = np.asarray(masks, dtype=bool)
    n = masks.shape[0]
    boxes = np.zeros((n, 4), dtype=np.float32)
    if n == 0:
        return boxes
    rows = masks.any(axis=2)
    cols = masks.any(axis=1)
    nonempty = rows.any(axis=1)
    h, w = masks.shape[1:]
    boxes[:, 0] = np.argmax(cols, axis=1)
    boxes[:, 1] = np.argmax(rows, axis=1)
    boxes[:, 2] = w - np.argmax(cols[:, ::-1], axis=1)
    boxes[:, 3] = h - np.argmax(rows[:, ::-1], axis=1)
    boxes[~nonempty] = 0
    return boxes


def expand_box(box: np.ndarray, margin: float, size: tuple[int, int]) -> np.ndarray:
    """Grow an XYXY box by `margin` x its longer side on every side, clipped to size (H, W)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    pad = margin * max(x1 - x0, y1 - y0)
    height, width = size
    return np.array([max(0.0, x0 - pad), max(0.0, y0 - pad),
                     min(float(width), x1 + pad), min(float(height), y1 + pad)], dtype=np.float32)


def crop_to_box(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Pixels of `image` inside an XYXY box (rounded outwards to whole pixels)."""
    x0, y0 = int(np.floor(box[0])), int(np.floor(box[1]))
    x1, y1 = int(np.ceil(box[2])), int(np.ceil(box[3]))
    return np.ascontiguousarray(image[max(y0, 0):y1, max(x0, 0):x1])


def black_background(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Full frame, object pixels kept, background set to 0."""
    return np.where(mask[:, :, None], image, 0).astype(np.uint8)


def dim_background(image: np.ndarray, mask: np.ndarray, factor: float = DIM_FACTOR) -> np.ndarray:
    """Full frame, background brightness multiplied by `factor`."""
    dimmed = (image.astype(np.float32) * factor).round().astype(np.uint8)
    return np.where(mask[:, :, None], image, dimmed)


def blur_background(image: np.ndarray, mask: np.ndarray, radius: float) -> np.ndarray:
    """Full frame, background Gaussian-blurred with `radius` pixels."""
    blurred = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))
    return np.where(mask[:, :, None], image, blurred)


def _check(image: np.ndarray, mask: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match image {image.shape[:2]}")


def view_mask(image, mask):
    """`mask`: the full frame with the background black (paper's mask view)."""
    return black_background(image, mask)


def view_crop(image, mask):
    """`crop`: the bounding box of the mask, background kept (paper's crop view)."""
    return crop_to_box(image, mask_to_box(mask))


def view_mask_crop(image, mask):
    """`mask_crop`: the object on black, cropped to its bounding box."""
    return crop_to_box(black_background(image, mask), mask_to_box(mask))


def view_context(image, mask):
    """`context`: the bounding box grown by CONTEXT_MARGIN, background kept."""
    return crop_to_box(image, expand_box(mask_to_box(mask), CONTEXT_MARGIN, image.shape[:2]))


def view_dim(image, mask):
    """`dim`: the context crop with the background dimmed to DIM_FACTOR brightness."""
    box = expand_box(mask_to_box(mask), CONTEXT_MARGIN, image.shape[:2])
    return dim_background(crop_to_box(image, box), crop_to_box(mask, box))


def view_blur(image, mask):
    """`blur`: the context crop with the background blurred."""
    box = expand_box(mask_to_box(mask), CONTEXT_MARGIN, image.shape[:2])
    crop = crop_to_box(image, box)
    radius = max(2.0, BLUR_FRACTION * max(crop.shape[:2]))
    return blur_background(crop, crop_to_box(mask, box), radius)


@dataclass(frozen=True)
class View:
    """A named object view and its one-line description (for UI labels)."""

    name: str
    description: str
    render: Callable[[np.ndarray, np.ndarray], np.ndarray]


VIEWS: dict[str, View] = {v.name: v for v in (
    View("mask", "full frame, background black (paper)", view_mask),
    View("crop", "bounding box of the object (paper)", view_crop),
    View("mask_crop", "object on black, cropped to its box", view_mask_crop),
    View("dim", "box with margin, background dimmed", view_dim),
    View("blur", "box with margin, background blurred", view_blur),
    View("context", "box with a context margin", view_context),
)}
VIEW_NAMES: tuple[str, ...] = tuple(VIEWS)


def get_view(name: str) -> View:
    """The view called `name`; ValueError listing the valid names otherwise."""
    if name not in VIEWS:
        raise ValueError(f"unknown view {name!r}; choose one of {', '.join(VIEW_NAMES)}")
    return VIEWS[name]


def render_view(name: str, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Render view `name` of the object `mask` in `image`: (h, w, 3) uint8."""
    view = get_view(name)
    mask = np.asarray(mask, dtype=bool)
    _check(image, mask)
    return view.render(image, mask)


def render_views(image: np.ndarray, mask: np.ndarray, names=VIEW_NAMES) -> dict[str, np.ndarray]:
    """Every view in `names` of one object, keyed by name."""
    return {name: render_view(name, image, mask) for name in names}
