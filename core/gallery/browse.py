"""Opening and browsing large galleries: what the app and the CLI call.

    gallery = open_gallery(path_or_none)            # --gallery PATH, else $SAMCLIP_GALLERY
    check_model(gallery, embedder.model_info, path) # GalleryMismatch for another model
    page = search_page(gallery, query, offset=0, limit=20)   # page.hits, page.has_more
    thumb = hit_thumbnail(gallery, page.hits[0].record)  # its thumbnail (None if not written)
    image, mask = hit_source(page.hits[0].record)   # the source image from disk + its mask
    shown = outline(image, mask)                    # the object outlined

Thumbnails (core.gallery.thumbs) are small JPEGs written at ingestion in `<gallery>/thumbs/`, so
a results page needs neither the source images nor their decoding; galleries built
without them (older ones, `index --no-thumbnails`) have only `hit_source`.

`open_gallery` memory-maps the embeddings, the records and the index, so a gallery of
millions of objects opens in well under a second and costs little memory; records are
decoded only for the hits shown. A directory holding a `SHARDS` file (one gallery path
per line, relative to it) opens as a `ShardedGallery`: every shard is searched and the
hits are merged (the query fan-out of a sharded deployment, see README "Scale").

Conventions: query (D,) or (1, D) float32 unit vector; images (H, W, 3) uint8 RGB; masks
(H, W) bool; boxes XYXY pixels.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from core.gallery.gallery import Gallery, GalleryMismatch, Hit, ObjectRecord, _check_expectations
from core.io.images import load_image
from core.io.masks import outer_edge, rle_to_mask
from core.gallery.thumbs import OUTLINE_COLOR, read_thumbnail, thumb_path

#: Environment variable naming the gallery the app opens (like --gallery PATH).
GALLERY_ENV = "SAMCLIP_GALLERY"
SHARDS_FILE = "SHARDS"


@dataclass
class Page:
    """One page of hits: hits ranked offset..offset+len(hits)-1 (Hit.rank is global),
    total = objects in the gallery, has_more = a next page may hold hits."""

    hits: list[Hit]
    offset: int
    limit: int
    total: int
    has_more: bool


class ShardedGallery:
    """Several galleries (same model, view, metric) searched as one: each shard returns its
    top k, the merged top k is returned; ids are (shard, id) packed as shard * 2**40 + id."""

    def __init__(self, shards: Sequence[Gallery]):
        if not shards:
            raise ValueError("a sharded gallery needs at least one shard")
        first = shards[0]
        for g in shards[1:]:
            if (g.dim, g.view, g.metric) != (first.dim, first.view, first.metric):
                raise GalleryMismatch("shards differ in width, view or metric")
        self.shards = list(shards)
        self.dim, self.view, self.metric, self.model_info = first.dim, first.view, first.metric, first.model_info
        self.spec = first.spec

    def __len__(self) -> int:
        return sum(len(g) for g in self.shards)

    def search(self, queries: np.ndarray, k: int = 5, exclude=None) -> list[list[Hit]]:
        per_shard = [g.search(queries, k) for g in self.shards]
        out = []
        for q in range(len(per_shard[0])):
            hits = [(h, s) for s, shard_hits in enumerate(per_shard) for h in shard_hits[q]]
            hits.sort(key=lambda hs: -hs[0].score if self.metric == "cosine" else hs[0].score)
            out.append([Hit(h.record, h.score, rank, (s << 40) + h.id) for rank, (h, s) in enumerate(hits[:k])])
        return out


def gallery_path_from_env() -> str | None:
    """$SAMCLIP_GALLERY, or None when unset or empty."""
    return os.environ.get(GALLERY_ENV, "").strip() or None


def open_gallery(path: str | os.PathLike | None = None, *, expect_model: dict | None = None):
    """The gallery at `path` (else $SAMCLIP_GALLERY), memory-mapped; a ShardedGallery for a
    directory with a SHARDS file. FileNotFoundError when neither is given or it is missing;
    GalleryMismatch / GalleryCorrupt as Gallery.load."""
    path = path or gallery_path_from_env()
    if not path:
        raise FileNotFoundError(f"no gallery given (pass --gallery PATH or set {GALLERY_ENV})")
    path = Path(path)
    if (path / SHARDS_FILE).is_file():
        names = [line.strip() for line in (path / SHARDS_FILE).read_text().splitlines() if line.strip()]
        return ShardedGallery([Gallery.load(path / n, expect_model=expect_model) for n in names])
    return Gallery.load(path, expect_model=expect_model)


def check_model(gallery, model_info: dict, where: str | os.PathLike = "gallery") -> None:
    """GalleryMismatch when `gallery` was built with another model than `model_info`."""
    _check_expectations(where, {"view": gallery.view, "metric": gallery.metric, "model": gallery.model_info},
                        model_info, None, None)


def search_page(gallery, query: np.ndarray, *, offset: int = 0, limit: int = 20) -> Page:
    """Hits offset .. offset + limit - 1 for one query (the top offset + limit are searched)."""
    if offset < 0 or limit < 1:
        raise ValueError("offset must be >= 0 and limit >= 1")
    q = np.asarray(query, np.float32).reshape(1, -1)
    hits = gallery.search(q, k=offset + limit)[0] if len(gallery) else []
    page = hits[offset:offset + limit]
    return Page(page, offset, limit, len(gallery), has_more=len(hits) == offset + limit and
                offset + limit < len(gallery))


def hit_source(record: ObjectRecord) -> tuple[np.ndarray, np.ndarray | None]:
    """(the record's source image read from disk, (H, W) bool mask or None).

    FileNotFoundError / core.io.images.ImageError when the file is gone or unreadable;
    ValueError when the file no longer has the recorded size (it was replaced).
    """
    image = load_image(record.source)
    if record.image_hw is not None and tuple(image.shape[:2]) != tuple(record.image_hw):
        raise ValueError(f"{record.source} is {image.shape[1]}x{image.shape[0]} now, but the object was found "
                         f"in a {record.image_hw[1]}x{record.image_hw[0]} image: the file has changed")
    mask = rle_to_mask(record.mask_rle) if record.mask_rle else None
    return image, mask


def _gallery_dirs(where) -> list[Path]:
    """The directories thumbnails of `where` (a path, Gallery or ShardedGallery) may be in."""
    if isinstance(where, (str, os.PathLike)):
        path = Path(where)
        if (path / SHARDS_FILE).is_file():
            return [path / line.strip() for line in (path / SHARDS_FILE).read_text().splitlines() if line.strip()]
        return [path]
    if isinstance(where, ShardedGallery):
        return [d for g in where.shards for d in _gallery_dirs(g)]
    directory = getattr(where, "directory", None)
    return [] if directory is None else [Path(directory)]


def hit_thumbnail(gallery, record: ObjectRecord) -> np.ndarray | None:
    """The record's thumbnail, (h, w, 3) uint8 RGB with max(h, w) <= 128, read from the
    gallery's thumbs/ (`gallery`: its directory, a loaded Gallery or a ShardedGallery);
    None when it has none (built with --no-thumbnails, before thumbnails, or unreadable)."""
    for directory in _gallery_dirs(gallery):
        thumb = read_thumbnail(thumb_path(directory, record))
        if thumb is not None:
            return thumb
    return None


def outline(image: np.ndarray, mask: np.ndarray | None, box=None, color=OUTLINE_COLOR, width: int = 3) -> np.ndarray:
    """A copy of `image` with the object's mask boundary (or, without a mask, its XYXY box)
    drawn `width` pixels thick in `color`."""
    out = image.copy()
    if mask is not None:
        out[outer_edge(mask, width)] = color
        return out
    if box is not None:
        h, w = image.shape[:2]
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        out[y0:y0 + width, x0:x1] = color
        out[max(y0, y1 - width):y1, x0:x1] = color
        out[y0:y1, x0:x0 + width] = color
        out[y0:y1, max(x0, x1 - width):x1] = color
    return out
