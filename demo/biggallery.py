"""The large gallery of `python app.py --gallery PATH` (or $SAMCLIP_GALLERY).

Opened once per process with `core.gallery.browse.open_gallery` (memory-mapped, read-only) and
shared by every session; checked against the app's CLIP model; searched a page at a time
(`core.gallery.browse.search_page`); each hit's tile is its thumbnail written at ingestion
(`core.gallery.browse.hit_thumbnail`: no source image read), else, for galleries without
thumbnails, drawn from its source image on disk with the object outlined
(`core.gallery.browse.hit_source` + `outline`). The per-session paging state (query
vector, offset) lives in `demo.state.Session`; nothing here belongs to one person.

Conventions: query (D,) float32 unit vector; images (H, W, 3) uint8 RGB; masks (H, W)
bool; boxes XYXY pixels of the source image.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from PIL import Image

from core.gallery.browse import Page, check_model, hit_source, hit_thumbnail, open_gallery, outline, search_page
from core.gallery.gallery import GalleryMismatch, ObjectRecord
from core.io.masks import box_to_mask
from demo import rendering
from demo.state import UserError

class LargeGallery:
    """One gallery shared read-only by all sessions. `mismatch`: the one-line reason it
    cannot be searched (built with another CLIP model), None when it can; `checked`: the
    app's model has been compared with the gallery's."""

    def __init__(self, path, gallery=None):
        self.path = Path(path)
        self.gallery = gallery if gallery is not None else open_gallery(self.path)
        self.name = self.path.resolve().name or str(self.path)
        self.mismatch: str | None = None
        self.checked = False
        self._lock = threading.Lock()   # one search at a time: faiss search parameters are per index

    def __len__(self) -> int:
        return len(self.gallery)

    @property
    def view(self) -> str:
        return self.gallery.view

    @property
    def metric(self) -> str:
        return self.gallery.metric

    def label(self) -> str:
        """"Your gallery: coco128 (1,234 objects)"."""
        return f"Your gallery: {self.name} ({len(self):,} objects)"

    def check(self, model_info: dict) -> str | None:
        """Compare the gallery's CLIP model with `model_info`; returns (and keeps) the mismatch line."""
        try:
            check_model(self.gallery, model_info, self.name)
            self.mismatch = None
        except GalleryMismatch as exc:
            self.mismatch = str(exc).splitlines()[0]
        self.checked = True
        return self.mismatch

    def status(self) -> str:
        """One Markdown line: what the gallery is, or why it cannot be searched."""
        if self.mismatch:
            return f"⚠️ {self.label()} cannot be searched: {self.mismatch}. The examples still can."
        fixed = f"view **{self.view}**, **{self.metric}** (fixed when it was built)"
        return f"{self.label()}: {fixed}" + ("." if self.checked else "; checked once the models are loaded.")

    def page(self, query: np.ndarray, offset: int, limit: int) -> Page:
        """Hits offset .. offset + limit - 1 of the (D,) or (1, D) `query` (UserError on a mismatch)."""
        if self.mismatch:
            raise UserError(f"{self.label()} cannot be searched: {self.mismatch}.")
        with self._lock:
            return search_page(self.gallery, query, offset=offset, limit=limit)


def placeholder(side: int) -> np.ndarray:
    """A grey (side * 3 // 4, side, 3) uint8 tile crossed out: the source image is missing."""
    h, w = max(2, side * 3 // 4), max(2, side)
    tile = np.full((h, w, 3), 215, np.uint8)
    rows = np.arange(h)
    cols = (rows * (w - 1) / max(1, h - 1)).astype(int)
    for dx in (-1, 0, 1):
        tile[rows, np.clip(cols + dx, 0, w - 1)] = 150
        tile[rows, np.clip(w - 1 - cols + dx, 0, w - 1)] = 150
    return tile


def _shrink_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool -> `size` (h, w) bool, kept wherever any of it falls (small objects stay)."""
    pil = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
    return np.asarray(pil.resize((size[1], size[0]), Image.Resampling.BOX)) > 0


def source_with_outline(record: ObjectRecord, max_side: int, width: int = 2) -> np.ndarray:
    """The record's source image from disk, at most `max_side` px on its longer side, the
    rest of the picture dimmed and the object's mask (else its box) outlined `width` px.
    Raises what `hit_source` raises."""
    image, mask = hit_source(record)
    small = rendering.thumbnail(image, max_side)
    region = None
    if mask is not None and mask.shape == image.shape[:2]:
        region = _shrink_mask(mask, small.shape[:2])
    if region is None or not region.any():
        scale = small.shape[1] / image.shape[1]
        region = box_to_mask([v * scale for v in record.box], small.shape[:2])
    shown = small.copy()
    shown[~region] = shown[~region] // 2
    return outline(shown, region, width=width)


def source_problem(record: ObjectRecord, exc: BaseException) -> str:
    """One line: why the record's source image cannot be shown."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    name = Path(record.source).name
    return f"{name}: {reason.replace(str(record.source), name)}"[:300]


def hit_picture(record: ObjectRecord, max_side: int, gallery=None) -> tuple[np.ndarray, str | None]:
    """(the record's thumbnail in `gallery` (a Gallery, ShardedGallery or its path) at most
    `max_side` px, None) when it has one; else (the outlined source image at most
    `max_side` px, None), or (a placeholder, the one-line reason) when the source image is
    missing, unreadable or changed."""
    thumb = hit_thumbnail(gallery, record) if gallery is not None else None
    if thumb is not None:
        return rendering.thumbnail(thumb, max_side), None
    try:
        return source_with_outline(record, max_side), None
    except (OSError, ValueError, KeyError, TypeError) as exc:   # ImageError is a ValueError; a bad RLE
        return placeholder(max_side), source_problem(record, exc)


def source_and_mask(record: ObjectRecord) -> tuple[np.ndarray, np.ndarray]:
    """(the source image from disk, the object's (H, W) bool mask there: its mask, else its
    box). Raises what `hit_source` raises (missing, unreadable or changed file)."""
    image, mask = hit_source(record)
    if mask is not None and mask.shape == image.shape[:2] and mask.any():
        return image, mask.astype(bool, copy=False)
    return image, box_to_mask(record.box, image.shape[:2])
