"""Reading images of any common kind into one convention: (H, W, 3) uint8 RGB.

Handled: RGB, grayscale, RGBA / LA / palette with transparency (composited on white),
CMYK, 1-bit, 16-bit and 32-bit integer, float, EXIF orientation. Refused with
`ImageError`: unreadable or truncated files, files over `config.MAX_IMAGE_BYTES`, and
images over `config.MAX_IMAGE_PIXELS` (checked from the header, before decoding).
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core import config

ImageSource = Union[str, os.PathLike, bytes, io.IOBase, Image.Image, np.ndarray]


class ImageError(ValueError):
    """An image that cannot be used, with a message fit for a person."""


def load_image(src: ImageSource, *, max_pixels: int | None = None) -> np.ndarray:
    """Read `src` (path, bytes, file object, PIL image or array) as (H, W, 3) uint8 RGB."""
    max_pixels = max_pixels or config.MAX_IMAGE_PIXELS
    if isinstance(src, np.ndarray):
        return array_to_rgb(src)
    if isinstance(src, Image.Image):
        _check_pixels(src.size, max_pixels)
        return pil_to_rgb(src)
    pil = _open(src)
    _check_pixels(pil.size, max_pixels)
    try:
        pil.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"the image file is damaged or truncated ({exc})") from exc
    return pil_to_rgb(pil)


def _open(src) -> Image.Image:
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise ImageError(f"no such image file: {path}")
        if path.stat().st_size > config.MAX_IMAGE_BYTES:
            raise ImageError(f"{path.name} is {path.stat().st_size / 1e6:.0f} MB; the limit is "
                             f"{config.MAX_IMAGE_BYTES / 1e6:.0f} MB")
        src = path.read_bytes()
    if isinstance(src, bytes):
        if len(src) > config.MAX_IMAGE_BYTES:
            raise ImageError(f"the image is {len(src) / 1e6:.0f} MB; the limit is "
                             f"{config.MAX_IMAGE_BYTES / 1e6:.0f} MB")
        src = io.BytesIO(src)
    try:
        with _no_bomb_check():
            return Image.open(src)
    except UnidentifiedImageError as exc:
        raise ImageError("this file is not an image format that can be read "
                         "(try PNG, JPEG, WebP, BMP, TIFF or GIF)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot read the image ({exc})") from exc


class _no_bomb_check:
    """Let PIL open big headers; our own pixel limit decides with a clear message."""

    def __enter__(self):
        self._old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None

    def __exit__(self, *exc):
        Image.MAX_IMAGE_PIXELS = self._old


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"the image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(f"the image is {width}x{height} = {width * height / 1e6:.0f} MP; "
                         f"the limit is {max_pixels / 1e6:.0f} MP (set $SAMCLIP_MAX_IMAGE_PIXELS)")


def pil_to_rgb(pil: Image.Image) -> np.ndarray:
    """EXIF-rotate, composite transparency on white and convert any mode to (H, W, 3) uint8."""
    pil = ImageOps.exif_transpose(pil)
    if pil.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return array_to_rgb(np.asarray(pil))
    if pil.mode == "P":
        pil = pil.convert("RGBA")
    if pil.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = pil.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        pil = Image.alpha_composite(white, rgba)
    return np.ascontiguousarray(np.asarray(pil.convert("RGB"), dtype=np.uint8))


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale integer or float pixel values to uint8."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        top = int(arr.max(initial=0))
        if top <= 255 and arr.min(initial=0) >= 0:
            return arr.astype(np.uint8)
        scale = 65535 if top <= 65535 else top
        return np.clip(arr.astype(np.float64) * 255.0 / scale, 0, 255).round().astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.nan_to_num(arr.astype(np.float64))
        lo, hi = float(arr.min(initial=0.0)), float(arr.max(initial=0.0))
        if lo >= 0.0 and hi <= 1.0:
            return (arr * 255.0).round().astype(np.uint8)
        if lo >= 0.0 and hi <= 255.0:
            return arr.round().astype(np.uint8)
        span = hi - lo or 1.0
        return ((arr - lo) * 255.0 / span).round().astype(np.uint8)
    raise ImageError(f"unsupported pixel type {arr.dtype}")


def array_to_rgb(arr: np.ndarray) -> np.ndarray:
    """Convert (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) arrays of any numeric dtype."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.repeat(_to_uint8(arr)[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = _to_uint8(arr)
        if arr.shape[2] == 4:
            alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
            arr = (arr[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    else:
        raise ImageError(f"an image array must be HxW, HxWx3 or HxWx4, not {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"the image has no pixels ({arr.shape[1]}x{arr.shape[0]})")
    return np.ascontiguousarray(arr)
