"""Object thumbnails on disk: small JPEGs rendered at ingestion, read by the app's results pages.

A thumbnail is the object's box grown by THUMB_MARGIN x its longer side (clipped to the
image), scaled so its longer side is at most THUMB_SIDE px, the outside of the mask
dimmed to DIM brightness and the mask's edge outlined 1 px in OUTLINE_COLOR: the object
stands out at a glance, with enough of its surroundings to tell what it is. It does not
depend on the gallery's view, so every version and view of a gallery shares it.

Layout, content-addressed and shared by every version (no copy when a version is written):

    <gallery>/thumbs/<image_key[:2]>/<image_key>/<name>.jpg

name = the record's object_id (e.g. the COCO annotation id) when it is a safe file name,
else "m-" + a hash of its RLE mask (automatic masks have no object_id); records without
an image key, or with neither mask nor object_id, have no thumbnail. Files are written
to a temporary name and renamed (a reader never sees half a JPEG); they are not fsynced,
so after a power cut some may be missing and the app falls back to the source image.

Conventions: images (H, W, 3) uint8 RGB; masks (H, W) bool; JPEG bytes.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from core.io.masks import outer_edge
from core.views import crop_to_box, expand_box, mask_to_box

THUMBS_DIR = "thumbs"
THUMB_SIDE = 128        #: longest side of a thumbnail, px
THUMB_QUALITY = 85      #: JPEG quality
THUMB_MARGIN = 0.1      #: margin around the box, as a fraction of its longer side
DIM = 0.5               #: brightness kept outside the mask
OUTLINE_COLOR = (255, 64, 0)
_SAFE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")


def _shrink(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) bool mask -> `size` (H, W) bool by majority; any coverage for tiny objects."""
    cover = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size[1], size[0]), Image.Resampling.BOX))
    major = cover >= 128
    return major if major.any() else cover > 0


def render_thumbnail(image: np.ndarray, mask: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """(h, w, 3) uint8, max(h, w) <= `side`: the object's box with a margin, outside dimmed,
    mask edge outlined. `mask` (H, W) bool, non-empty, the size of `image`."""
    box = expand_box(mask_to_box(mask), THUMB_MARGIN, image.shape[:2])
    crop, m = crop_to_box(image, box), crop_to_box(mask, box)
    h, w = crop.shape[:2]
    scale = min(1.0, side / max(h, w))
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if size != (h, w):
        crop = np.asarray(Image.fromarray(crop).resize((size[1], size[0]), Image.Resampling.BILINEAR))
        m = _shrink(m, size)
    out = np.where(m[:, :, None], crop, (crop * DIM).astype(np.uint8))
    out[outer_edge(m)] = OUTLINE_COLOR
    return out


def encode_jpeg(image: np.ndarray, quality: int = THUMB_QUALITY) -> bytes:
    """JPEG bytes of an (h, w, 3) uint8 RGB image."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def thumbnail_bytes(image: np.ndarray, mask: np.ndarray) -> bytes | None:
    """`render_thumbnail` as JPEG bytes (None for an empty mask)."""
    return encode_jpeg(render_thumbnail(image, mask)) if mask.any() else None


def thumb_name(record) -> str | None:
    """The file stem of a record's thumbnail (see module docstring), None when it has none."""
    if record.object_id is not None and _SAFE.fullmatch(str(record.object_id)):
        return str(record.object_id)
    if record.mask_rle:
        return "m-" + hashlib.blake2b(str(record.mask_rle["counts"]).encode(), digest_size=8).hexdigest()
    return None


def thumb_path(directory: str | os.PathLike, record) -> Path | None:
    """Where the thumbnail of `record` lives in the gallery at `directory` (None: it has none)."""
    name, key = thumb_name(record), record.image_key
    if name is None or not key or not _SAFE.fullmatch(key):
        return None
    return Path(directory) / THUMBS_DIR / key[:2] / key / f"{name}.jpg"


def write_thumbnails(directory: str | os.PathLike, items: Iterable[tuple[object, bytes]]) -> int:
    """Write (record, JPEG bytes) pairs (temporary name, then rename); returns how many."""
    count = 0
    for record, data in items:
        path = thumb_path(directory, record)
        if path is None or data is None:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        count += 1
    return count


def read_thumbnail(path: Path | None) -> np.ndarray | None:
    """(h, w, 3) uint8 RGB of the JPEG at `path`; None when it is missing or unreadable."""
    if path is None:
        return None
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def prune_thumbnails(directory: str | os.PathLike, keep: set[str]) -> list[str]:
    """Remove the thumbnail folders of image keys not in `keep` (and stray temporary files);
    returns what was removed, relative to `directory`. The caller holds the writer lock."""
    root = Path(directory) / THUMBS_DIR
    removed = []
    for folder in sorted(root.glob("*/*")) if root.is_dir() else []:
        if folder.is_dir() and folder.name not in keep:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder.relative_to(directory)))
        elif folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
                removed.append(str(tmp.relative_to(directory)))
    for prefix in root.glob("*") if root.is_dir() else []:
        if prefix.is_dir() and not any(prefix.iterdir()):
            prefix.rmdir()
    return removed
