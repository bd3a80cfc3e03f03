"""Pure helpers between the session's arrays and what the browser canvas and the downloads need.

numpy + PIL only. Conventions: images (H, W, 3) uint8 RGB; masks (H, W) bool; sizes (H, W);
points (x, y) pixels.

- `open_upload`: read and check a file the person gave, downscale a very large one;
- `display_size` / `to_display`: the canvas shows the working image at most `max_side` big;
- `row_rle`: a mask as row-major run lengths, what the canvas's JavaScript decodes;
- `pick_mask`: which automatic mask a click means (smallest containing, else nearest);
- `cutout_png`, `coco_document`: the exports at the original size.
"""
from __future__ import annotations

import io
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from core import config
from core.io.images import pil_to_rgb
from demo.state import UserError

#: Images with more pixels than this are decoded one at a time (their decoded copies are
#: what costs memory: ~4 bytes per pixel while converting), so N such uploads at once do
#: not cost N times the memory.
BIG_DECODE_PIXELS = 8_000_000
_PIL_LIMIT_LOCK = threading.Lock()
_BIG_DECODE = threading.Lock()


@dataclass(frozen=True)
class OpenedImage:
    """An image ready for the session: `image` (H, W, 3) uint8 RGB working copy (at most
    `work_max_side` on its longer side), `original_size` (H, W) of the file (after EXIF
    rotation)."""

    image: np.ndarray
    original_size: tuple[int, int]

    @property
    def downscaled(self) -> bool:
        return tuple(self.image.shape[:2]) != tuple(self.original_size)


def open_upload(path, name: str, work_max_side: int = 2048) -> OpenedImage:
    """Read the file at `path` (named `name` for messages) as a working image.

    Refuses, with a `UserError` that says why: a missing or empty file, one that is not an
    image, a damaged or truncated one, one over the image limits (`core.config.MAX_IMAGE_PIXELS`,
    `MAX_IMAGE_BYTES`: the same for the app and the library). Very
    large images are decoded at reduced size where the format allows (JPEG) and downscaled."""
    label = f"'{name}'" if name else "The file"
    file = Path(str(path)) if path else None
    if file is None or not file.is_file():
        raise UserError(f"{label} did not arrive on the server; please upload it again.")
    size = file.stat().st_size
    if size == 0:
        raise UserError(f"{label} is empty (0 bytes): choose an image file (PNG, JPEG, WebP...).")
    if size > config.MAX_IMAGE_BYTES:
        raise UserError(f"{label} is {size / 1e6:.0f} MB; the app takes files up to "
                        f"{config.MAX_IMAGE_BYTES / 1e6:.0f} MB.")
    with _PIL_LIMIT_LOCK:  # our own pixel limit decides, with our own message
        old, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            pil = Image.open(file)
        except UnidentifiedImageError:
            raise UserError(f"{label} is not an image the app can read: use PNG, JPEG, WebP, "
                            "BMP, TIFF or GIF.") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise UserError(f"{label} cannot be read as an image ({exc}).") from None
        finally:
            Image.MAX_IMAGE_PIXELS = old
    width, height = pil.size
    if width <= 0 or height <= 0:
        raise UserError(f"{label} has no pixels ({width}x{height}).")
    if width * height > config.MAX_IMAGE_PIXELS:
        raise UserError(f"{label} is {width}x{height} = {width * height / 1e6:.0f} megapixels; the "
                        f"app takes up to {config.MAX_IMAGE_PIXELS / 1e6:.0f} MP. Please scale it down.")
    try:
        orientation = int(pil.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block is not worth refusing the picture for
        orientation = 1
    original = (width, height) if orientation in (5, 6, 7, 8) else (height, width)
    scale = work_max_side / max(width, height)
    big = width * height > BIG_DECODE_PIXELS
    if big:
        _BIG_DECODE.acquire()
    try:
        if scale < 1.0 and pil.format == "JPEG":
            pil.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
        pil.load()
        if scale < 1.0:   # shrink before converting: the full-size RGB copy is never made
            pil.thumbnail((work_max_side, work_max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
        rgb = pil_to_rgb(pil)
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{label} is damaged or truncated and cannot be decoded ({exc}).") from None
    except MemoryError:
        raise UserError(f"{label} is too big to decode on this server; please scale it down.") from None
    finally:
        pil.close()
        if big:
            _BIG_DECODE.release()
    if max(rgb.shape[:2]) > work_max_side:
        rgb = resize_image(rgb, work_max_side)
    return OpenedImage(np.ascontiguousarray(rgb), (int(original[0]), int(original[1])))


def resize_image(image: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale (H, W, 3) uint8 so its longer side is `max_side` (never upscales)."""
    h, w = image.shape[:2]
    dh, dw = display_size((h, w), max_side)
    if (dh, dw) == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((dw, dh), Image.Resampling.LANCZOS,
                                                    reducing_gap=3.0))


def display_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(H, W) of an image of `size` (H, W) shown at most `max_side` big (never upscaled)."""
    h, w = int(size[0]), int(size[1])
    scale = min(1.0, max_side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def to_display(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W) bool mask to `size` (H, W): area-averaged, kept where >= half."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape == tuple(size):
        return mask
    pil = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
    return np.asarray(pil.resize((size[1], size[0]), Image.Resampling.BOX)) >= 128


def to_size(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale an (H, W) bool mask to `size` (H, W) with nearest-neighbour sampling
    (the working-image mask back to the original photo's size)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape == tuple(size):
        return mask
    pil = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
    return np.asarray(pil.resize((size[1], size[0]), Image.Resampling.NEAREST)) >= 128


def row_rle(mask: np.ndarray) -> list[int]:
    """Run lengths of an (H, W) bool mask read row by row, starting with a run of False
    (which may be 0 long): [0-run, 1-run, 0-run, ...]. Sums to H * W."""
    flat = np.asarray(mask, dtype=bool).ravel()
    if flat.size == 0:
        return []
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] else runs


def encode_mask(mask: np.ndarray) -> dict:
    """An (H, W) bool mask for the browser, in whichever form is smaller: {"runs": row_rle}
    (smooth masks: a few runs per row) or {"bits": base64 of the row-major bits packed
    8 to a byte, most significant first} (ragged masks, e.g. from untrained models)."""
    import base64

    flat = np.asarray(mask, dtype=bool).ravel()
    changes = int(np.count_nonzero(flat[1:] != flat[:-1])) if flat.size > 1 else 0
    if 4 * (changes + 2) <= flat.size / 6 + 16:
        return {"runs": row_rle(mask)}
    return {"bits": base64.b64encode(np.packbits(flat).tobytes()).decode("ascii")}


def decode_mask(data: dict, size: tuple[int, int]) -> np.ndarray:
    """Inverse of `encode_mask`."""
    import base64

    if "runs" in data:
        return row_rle_to_mask(data["runs"], size)
    bits = np.unpackbits(np.frombuffer(base64.b64decode(data["bits"]), dtype=np.uint8))
    return bits[: size[0] * size[1]].astype(bool).reshape(size)


def row_rle_to_mask(runs: list[int], size: tuple[int, int]) -> np.ndarray:
    """Inverse of `row_rle`."""
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, np.asarray(runs, dtype=np.int64))
    return flat.reshape(size)


def pick_mask(masks: np.ndarray, x: float, y: float, radius: float) -> int | None:
    """Index of the automatic mask a click at (x, y) means: the smallest of `masks`
    (N, H, W) bool containing the point; else the one whose nearest pixel is closest,
    within `radius` pixels (ties: the smaller mask); None when nothing is that close."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3 or not len(masks):
        return None
    n, h, w = masks.shape
    xi, yi = min(max(int(x), 0), w - 1), min(max(int(y), 0), h - 1)
    areas = masks.reshape(n, -1).sum(axis=1)
    covering = np.flatnonzero(masks[:, yi, xi])
    if covering.size:
        return int(covering[np.argmin(areas[covering])])
    r = max(1, int(math.ceil(radius)))
    y0, y1, x0, x1 = max(0, yi - r), min(h, yi + r + 1), max(0, xi - r), min(w, xi + r + 1)
    window = masks[:, y0:y1, x0:x1]
    yy, xx = np.mgrid[y0:y1, x0:x1]
    dist2 = (yy + 0.5 - y) ** 2 + (xx + 0.5 - x) ** 2
    best, best_key = None, None
    for i in range(n):
        if not window[i].any():
            continue
        d = float(dist2[window[i]].min())
        if d > radius ** 2:
            continue
        key = (d, int(areas[i]))
        if best_key is None or key < best_key:
            best, best_key = i, key
    return best


def mask_png(mask: np.ndarray) -> bytes:
    """A mask as an 8-bit grayscale PNG (object 255, background 0)."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(mask, bool).astype(np.uint8) * 255, mode="L").save(
        buf, format="PNG", optimize=False, compress_level=3)
    return buf.getvalue()


def cutout_png(image: np.ndarray, mask: np.ndarray, crop: bool = True) -> bytes:
    """The object as a transparent cut-out: RGBA PNG with alpha 255 on `mask`, 0 elsewhere,
    cropped to the mask's bounding box when `crop`. image (H, W, 3) uint8, mask (H, W) bool."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image size {image.shape[:2]}")
    rgba = np.dstack([image, mask.astype(np.uint8) * 255])
    if crop and mask.any():
        ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        rgba = rgba[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1]
    rgba[rgba[..., 3] == 0, :3] = 0
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba), mode="RGBA").save(buf, format="PNG", compress_level=3)
    return buf.getvalue()

