"""The gallery that ships with the app: objects of the example images, in several views.

SAM's automatic masks of each image in a folder are found once and embedded in every
requested view (one `core.gallery.gallery.Gallery` per view, cosine metric). The set is cached
on disk under a key that covers the image files, the models and the settings, so the
next start loads it instead of rebuilding. `SharedGallerySet` builds it at most once per
process while any number of sessions wait for it and watch its progress.

Conventions as in core.gallery.gallery: embeddings (N, D) float32 unit rows; records carry XYXY
boxes and COCO RLE masks of the source image.
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from core.sam.automask import AutoMaskSettings
from core.gallery.build import build_galleries_from_images, list_images
from core.gallery.gallery import Gallery, GalleryMismatch, ObjectRecord

#: progress(fraction 0..1, note)
Progress = Callable[[float, str], None]


def _no_progress(fraction: float, note: str) -> None:
    pass


def gallery_set_key(folder: str | Path, model_info: dict, views: Sequence[str],
                    max_objects: int, automask: AutoMaskSettings | None = None) -> str:
    """A short hash naming one build: image names and bytes, models, views and settings."""
    digest = hashlib.blake2b(digest_size=8)
    for path in list_images(folder):
        digest.update(path.name.encode())
        digest.update(hashlib.blake2b(path.read_bytes(), digest_size=16).digest())
    settings = {"model": model_info, "views": list(views), "max_objects": int(max_objects),
                "automask": asdict(automask or AutoMaskSettings())}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def build_gallery_set(folder: str | Path, segmenter, embedder, views: Sequence[str], *,
                      max_objects: int = 20, progress: Progress = _no_progress,
                      automask: AutoMaskSettings | None = None) -> dict[str, Gallery]:
    """One cosine gallery per view of the automatic-mask objects of every image in `folder`.

    Each image is segmented once; unreadable images are skipped. `automask` sets SAM's
    automatic masks. Returns {view: Gallery}.
    """
    galleries = build_galleries_from_images(
        folder, segmenter, embedder, views, metric="cosine", max_objects=max_objects,
        progress=lambda done, total, note: progress(done / total, f"{note} ({done}/{total})"),
        warn=lambda message: None, automask=automask)
    progress(1.0, f"{len(galleries[views[0]])} objects from {len(list_images(folder))} images")
    return galleries


def load_gallery_set(directory: str | Path, views: Sequence[str],
                     expect_model: dict | None = None) -> dict[str, Gallery] | None:
    """The cached set in `directory`, or None when any view is missing, mismatched or
    damaged (any file: the caller then rebuilds and saves over it)."""
    directory = Path(directory)
    out = {}
    for view in views:
        try:
            out[view] = Gallery.load(directory / view, expect_model=expect_model, expect_view=view,
                                     expect_metric="cosine")
        except (FileNotFoundError, GalleryMismatch, ValueError, OSError):
            return None
    return out


def save_gallery_set(galleries: dict[str, Gallery], directory: str | Path) -> Path:
    """Save each view's gallery under `directory/<view>/` (each save is atomic)."""
    directory = Path(directory)
    for view, gallery in galleries.items():
        gallery.save(directory / view)
    return directory


def combine(galleries: Sequence[Gallery], metric: str = "cosine") -> Gallery:
    """A new gallery holding every object of `galleries` (same view and width), searched
    with `metric` ("cosine" | "l2"); ids follow the order of `galleries`."""
    if not galleries:
        raise ValueError("nothing to combine")
    first = galleries[0]
    for g in galleries[1:]:
        if g.dim != first.dim or g.view != first.view:
            raise ValueError(f"cannot combine galleries of views/widths {first.view}/{first.dim} "
                             f"and {g.view}/{g.dim}")
    out = Gallery(first.dim, first.view, metric, first.model_info)
    for g in galleries:
        if len(g):
            out.add(g.embeddings, list(g.records))
    return out


def gallery_from_arrays(embeddings: np.ndarray, records: Sequence[ObjectRecord], view: str,
                        metric: str = "cosine", model_info: dict | None = None) -> Gallery:
    """A gallery over (N, D) float32 `embeddings` and their N `records` (all in `view`)."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    gallery = Gallery(embeddings.shape[1], view, metric, model_info)
    gallery.add(embeddings, list(records))
    return gallery


class SharedGallerySet:
    """The example gallery set, built or loaded at most once per process, shared read-only.

    `get(progress)` returns {view: Gallery}; the first caller builds (or loads from
    `cache_dir`), later callers wait and see the builder's progress through their own
    `progress` callback. A failed build is reported to every waiter and retried by the
    next call.
    """

    def __init__(self, folder: str | Path, cache_dir: str | Path, views: Sequence[str], *,
                 max_objects: int = 20, automask: AutoMaskSettings | None = None):
        self.folder = Path(folder)
        self.cache_dir = Path(cache_dir)
        self.views = tuple(views)
        self.max_objects = int(max_objects)
        self.automask = automask or AutoMaskSettings()
        self._cond = threading.Condition()
        self._galleries: dict[str, Gallery] | None = None
        self._building = False
        self._fraction, self._note = 0.0, "not started"
        self.error: str | None = None
        self.loaded_from_cache = False

    @property
    def ready(self) -> bool:
        return self._galleries is not None

    def get_ready(self) -> dict[str, Gallery] | None:
        """The galleries if they are built, else None (never waits)."""
        return self._galleries

    def status(self) -> tuple[float, str]:
        """(fraction done, note) of the build, for a status line."""
        with self._cond:
            return self._fraction, self._note

    def _report(self, fraction: float, note: str) -> None:
        with self._cond:
            self._fraction, self._note = fraction, note
            self._cond.notify_all()

    def get(self, segmenter_fn: Callable, embedder_fn: Callable, sam_name: str,
            progress: Progress = _no_progress) -> dict[str, Gallery]:
        """The galleries; builds them (calling `segmenter_fn()` / `embedder_fn()` for the
        shared models) unless they are ready, cached on disk, or being built by another
        caller, whose progress is then passed to `progress`."""
        with self._cond:
            while self._building:
                progress(self._fraction, self._note)
                self._cond.wait(timeout=0.5)
            if self._galleries is not None:
                return self._galleries
            self._building = True
            self.error = None
        try:
            galleries = self._load_or_build(segmenter_fn, embedder_fn, sam_name, progress)
        except BaseException as exc:
            with self._cond:
                self._building = False
                self.error = f"{type(exc).__name__}: {exc}"
                self._note = f"failed: {self.error}"
                self._cond.notify_all()
            raise
        with self._cond:
            self._galleries = galleries
            self._building = False
            self._cond.notify_all()
        return galleries

    def _load_or_build(self, segmenter_fn, embedder_fn, sam_name, progress) -> dict[str, Gallery]:
        def report(fraction: float, note: str) -> None:
            self._report(fraction, note)
            progress(fraction, note)

        embedder = embedder_fn()
        model_info = {**embedder.model_info, "sam": sam_name}
        key = gallery_set_key(self.folder, model_info, self.views, self.max_objects, self.automask)
        directory = self.cache_dir / f"examples-{key}"
        cached = load_gallery_set(directory, self.views, expect_model=embedder.model_info)
        if cached is None and directory.exists():
            report(0.0, f"the cached example gallery in {directory} is damaged or incomplete: rebuilding it")
        if cached is not None:
            self.loaded_from_cache = True
            report(1.0, f"loaded {len(next(iter(cached.values())))} objects from {directory}")
            return cached
        report(0.0, "building the example gallery (first start)")
        galleries = build_gallery_set(self.folder, segmenter_fn(), embedder, self.views,
                                      max_objects=self.max_objects, progress=report, automask=self.automask)
        save_gallery_set(galleries, directory)
        report(1.0, f"built {len(galleries[self.views[0]])} objects, cached in {directory}")
        return galleries
