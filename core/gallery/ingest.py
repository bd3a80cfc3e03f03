"""Incremental, resumable, parallel ingestion of images into a gallery on disk.

    tasks (folder or COCO)  ->  prepare (read file, content key, decode; COCO ground-truth
    masks and their views)  [worker processes]  ->  find objects (SAM automatic masks or
    COCO box prompts) and render views and thumbnails  [main process, GPU when torch sees
    one]  ->  CLIP, batched across images  ->  thumbnails to disk, then checkpoint segments
    ->  finalize: one new gallery version with the index chosen by size (core.gallery.index)

Thumbnails (core.gallery.thumbs, off with IngestSettings(thumbnails=False) / --no-thumbnails): one
small JPEG per object in `<gallery>/thumbs/`, shared by every version; each checkpoint
writes its thumbnails before its segment, so a resumed run has one for every record.

Incremental: an image whose file content (blake2b key) is already in the gallery, in a
pending checkpoint, or earlier in the same run is skipped, so adding a folder twice, or a
folder holding copies, adds each picture once.

Resumable: every `checkpoint_images` images (or `checkpoint_seconds`) the results so far
are written as one segment file in `<gallery>/ingest/` (written to a temporary name,
fsynced, renamed: a segment is there whole or not at all). A run killed at any point
(kill -9 included) leaves the published gallery untouched and its finished segments on
disk; the same command again skips the images those segments hold and goes on. Finalize
merges the published gallery with every segment (dropping any image already present, so a
crash between publishing and deleting segments cannot duplicate objects) into one new
version, then deletes the segments.

Canonical order: a gallery's objects are ordered by (source, image key, object order in
the image), whatever order, process or machine they were computed in; so appending B to
a gallery of A gives the gallery built from A and B in one go, and the Ray pipeline
(core.gallery.ray_runner) gives the one this module gives.

Conventions as core.gallery.gallery: embeddings (N, D) float32 unit rows; boxes XYXY pixels;
masks (H, W) bool, stored as COCO RLE; image_hw = (H, W).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from core.gallery import store
from core.sam.automask import AutoMaskSettings
from core.gallery.build import (IMAGE_SUFFIXES, FoundObject, objects_from_automasks, objects_from_boxes, records_for,
                        select_coco_images)
from core.io.coco import read_coco
from core.gallery.gallery import (Gallery, GalleryMismatch, ImageEntry, ObjectRecord, RecordTable,
                          images_from_columns, images_to_columns, records_to_columns)
from core.io.images import ImageError, load_image
from core.gallery.index import IndexSettings
from core.io.masks import coco_ann_to_mask, coco_box_to_xyxy
from core.gallery.thumbs import thumbnail_bytes, write_thumbnails
from core.views import VIEW_NAMES, mask_to_box, render_view


@dataclass(frozen=True)
class IngestSettings:
    """What an ingestion run computes and how it commits.

    view: object view embedded (core.views); metric: "cosine" | "l2".
    max_objects: automatic masks kept per image (best SAM score first).
    automask: SAM automatic-mask settings (None: AutoMaskSettings()).
    oracle_masks: with COCO tasks, ground-truth masks instead of SAM box prompts.
    checkpoint_images: commit a segment after this many images (default 32) ...
    checkpoint_seconds: ... or after this many seconds of work (default 120), whichever first.
    clip_batch: object images CLIP embeds together, across images (default 32).
    workers: processes that read, hash and decode images (and render ground-truth views);
        0 = all in this process.
    index: how the final index is chosen and tuned (core.gallery.index.IndexSettings).
    thumbnails: write each object's thumbnail JPEG to `<gallery>/thumbs/` (core.gallery.thumbs).
    """

    view: str = "crop"
    metric: str = "cosine"
    max_objects: int = 20
    automask: AutoMaskSettings | None = None
    oracle_masks: bool = False
    checkpoint_images: int = 32
    checkpoint_seconds: float = 120.0
    clip_batch: int = 32
    workers: int = 0
    index: IndexSettings = field(default_factory=IndexSettings)
    thumbnails: bool = True

    def __post_init__(self) -> None:
        if self.view not in VIEW_NAMES:
            raise ValueError(f"unknown view {self.view!r}; choose one of {', '.join(VIEW_NAMES)}")
        if self.metric not in ("cosine", "l2"):
            raise ValueError(f"unknown metric {self.metric!r}; choose cosine or l2")
        for name in ("max_objects", "checkpoint_images", "clip_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.workers < 0 or self.checkpoint_seconds <= 0:
            raise ValueError("workers must be >= 0 and checkpoint_seconds > 0")

    def fingerprint(self) -> dict:
        """The settings that decide what objects and vectors come out (checked on resume).
        `thumbnails` is not one: a run resumed with the other choice just has thumbnails
        for part of its objects, and the app falls back to the source image for the rest."""
        return {"view": self.view, "metric": self.metric, "max_objects": self.max_objects,
                "automask": asdict(self.automask or AutoMaskSettings()), "oracle_masks": self.oracle_masks}


@dataclass
class ImageTask:
    """One image to ingest. path: the file; coco_anns: for COCO sources the image's
    annotations to use (each with "bbox" [x, y, w, h], "id", "category" name, and
    "segmentation"), with coco_hw = (H, W) from the COCO file; None for a folder."""

    path: str
    coco_anns: list[dict] | None = None
    coco_hw: tuple[int, int] | None = None


@dataclass
class Prepared:
    """An image read and decoded: key = content hash, image (H, W, 3) uint8 or None with
    `error`; skipped = already known (not decoded); objects/crops: ground-truth objects
    and their rendered views when they need no model (COCO oracle masks)."""

    task: ImageTask
    key: str
    image: np.ndarray | None = None
    error: str | None = None
    skipped: bool = False
    objects: list[FoundObject] | None = None
    crops: list[np.ndarray] | None = None


@dataclass
class ImageResult:
    """What one image gave: its table entry, records and (n, D) float32 embeddings; crops
    (the rendered views, dropped once embedded) and thumbs (JPEG bytes per record, None
    when thumbnails are off; dropped once written) travel with it."""

    entry: ImageEntry
    records: list[ObjectRecord]
    embeddings: np.ndarray | None = None
    crops: list[np.ndarray] | None = None
    thumbs: list[bytes] | None = None


@dataclass
class IngestProgress:
    """Progress of a run: images done (new + skipped + unreadable) of total, objects added,
    rates over the time spent on new images, and the estimated seconds left."""

    done: int
    total: int
    new: int
    skipped: int
    unreadable: int
    objects: int
    elapsed_s: float
    images_per_s: float
    objects_per_s: float
    eta_s: float | None
    note: str = ""

    def line(self) -> str:
        eta = "?" if self.eta_s is None else f"{self.eta_s:.0f}s"
        return (f"{self.done}/{self.total} images ({self.skipped} known, {self.unreadable} unreadable), "
                f"{self.objects} objects, {self.images_per_s:.2f} img/s, {self.objects_per_s:.1f} obj/s, "
                f"{eta} left{(' - ' + self.note) if self.note else ''}")


@dataclass
class IngestReport:
    """The outcome of a run: counts, timings, rates and the version published."""

    gallery: str
    images_total: int
    images_new: int
    images_skipped: int
    images_unreadable: int
    objects_added: int
    objects_total: int
    resumed_segments: int
    checkpoints: int
    seconds: float
    images_per_s: float
    objects_per_s: float
    version: str | None
    index: dict

    def to_json(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- tasks


def folder_tasks(folder: str | Path, *, recursive: bool = False, limit: int | None = None) -> list[ImageTask]:
    """Image files in `folder` (and below, if `recursive`), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    found = folder.rglob("*") if recursive else folder.iterdir()
    paths = sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return [ImageTask(str(p)) for p in paths[:limit]]


def coco_tasks(ann_path: str | Path, images_dir: str | Path, *, limit: int | None = None,
               categories: Sequence[str] | None = None) -> list[ImageTask]:
    """One task per COCO image with at least one non-crowd annotation (in `categories`)."""
    coco = read_coco(ann_path)
    images = select_coco_images(coco, limit=limit, categories=categories)
    wanted = set(categories) if categories else None
    tasks = []
    for info in images:
        anns = [{**a, "category": coco.category_of(a)} for a in coco.annotations(info["id"])
                if not a.get("iscrowd") and (wanted is None or coco.category_of(a) in wanted)]
        tasks.append(ImageTask(str(Path(images_dir) / info["file_name"]), anns,
                               (int(info["height"]), int(info["width"]))))
    if not tasks:
        raise ValueError(f"{ann_path}: no images with annotations" + (f" in {sorted(wanted)}" if wanted else ""))
    return tasks


# ----------------------------------------------------------------------------- stages


def content_key(data: bytes) -> str:
    """The content key of an image file: blake2b-128 of its bytes, 32 hex digits."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def prepare(task: ImageTask, view: str, oracle_masks: bool, known: frozenset | set = frozenset()) -> Prepared:
    """Read, hash and decode one image (no model needed; runs in worker processes).

    Images whose key is in `known` are not decoded (skipped=True). For COCO tasks with
    oracle masks the objects and their `view` renderings are computed too.
    """
    try:
        data = Path(task.path).read_bytes()
    except OSError as exc:
        return Prepared(task, "missing:" + content_key(task.path.encode()), error=f"cannot read ({exc.strerror})")
    key = content_key(data)
    if key in known:
        return Prepared(task, key, skipped=True)
    try:
        image = load_image(data)
    except ImageError as exc:
        return Prepared(task, key, error=str(exc))
    prepared = Prepared(task, key, image)
    if task.coco_anns is not None and oracle_masks:
        prepared.objects = coco_found_objects(task, image, None, oracle_masks=True)
        prepared.crops = [render_view(view, image, o.mask) for o in prepared.objects]
    return prepared


def coco_found_objects(task: ImageTask, image: np.ndarray, segmenter, *, oracle_masks: bool) -> list[FoundObject]:
    """The objects of a COCO task: ground-truth masks or SAM's mask for each box prompt."""
    h, w = image.shape[:2]
    anns = task.coco_anns or []
    boxes = [coco_box_to_xyxy(a["bbox"]) for a in anns]
    if oracle_masks:
        masks = [coco_ann_to_mask(a, h, w) for a in anns]
    else:
        masks = objects_from_boxes(segmenter, image, boxes) if anns else []
    return [FoundObject(m, mask_to_box(m), a["category"], str(a["id"])) for a, m in zip(anns, masks) if m.any()]


def find_objects(prepared: Prepared, segmenter, settings: IngestSettings) -> list[FoundObject]:
    """The objects of a decoded image (SAM automatic masks, COCO boxes or ground truth)."""
    if prepared.objects is not None:
        return prepared.objects
    if prepared.task.coco_anns is not None:
        return coco_found_objects(prepared.task, prepared.image, segmenter, oracle_masks=settings.oracle_masks)
    return objects_from_automasks(segmenter, prepared.image, max_objects=settings.max_objects,
                                  automask=settings.automask)


def image_result(prepared: Prepared, objects: Sequence[FoundObject] | None, view: str,
                 crops: Sequence[np.ndarray] | None = None, thumbnails: bool = True) -> ImageResult:
    """The records, rendered crops and (with `thumbnails`) thumbnail JPEGs of one prepared
    image; unreadable ones give none."""
    source = prepared.task.path
    if prepared.error is not None:
        return ImageResult(ImageEntry(prepared.key, source, "unreadable", 0), [], crops=[])
    objects = list(objects or [])
    records = records_for(objects, source, prepared.image.shape[:2], view)
    for r in records:
        r.image_key = prepared.key
    if crops is None:
        crops = [render_view(view, prepared.image, o.mask) for o in objects]
    thumbs = [thumbnail_bytes(prepared.image, o.mask) for o in objects] if thumbnails else None
    return ImageResult(ImageEntry(prepared.key, source, "ok", len(records)), records, crops=list(crops),
                       thumbs=thumbs)


def embed_results(results: Sequence[ImageResult], embedder, batch: int) -> None:
    """Fill each result's embeddings with CLIP, batching crops across images; drops crops."""
    crops = [c for r in results for c in (r.crops or [])]
    vectors = np.zeros((0, embedder.dim), np.float32)
    if crops:
        vectors = np.concatenate([embedder.embed_images(crops[i:i + batch], batch_size=batch)
                                  for i in range(0, len(crops), batch)])
    start = 0
    for r in results:
        n = len(r.records)
        r.embeddings, r.crops = vectors[start:start + n], None
        start += n


def write_result_thumbnails(directory: Path, results: Sequence[ImageResult]) -> int:
    """Write the thumbnails the results carry into the gallery's thumbs/ (then drop them)."""
    count = 0
    for r in results:
        if r.thumbs:
            count += write_thumbnails(directory, zip(r.records, r.thumbs))
        r.thumbs = None
    return count


# ----------------------------------------------------------------------------- checkpoints


class Journal:
    """The checkpoint segments of an unfinished run in `<gallery>/ingest/`."""

    def __init__(self, gallery_dir: str | Path):
        self.dir = Path(gallery_dir) / store.INGEST_DIR

    def settings_path(self) -> Path:
        return self.dir / "settings.json"

    def pending(self) -> bool:
        return self.settings_path().is_file()

    def start(self, meta: dict) -> None:
        """Record the run's settings; ValueError if pending work was made with others."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for tmp in self.dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        if self.pending():
            try:
                old = json.loads(self.settings_path().read_text())
            except ValueError:
                old = None
            if old is not None and old != meta:
                diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
                raise ValueError(f"{self.dir} holds unfinished work made with other settings ({', '.join(diff)}); "
                                 f"rerun with the same settings to finish it, or pass --discard-pending")
            if old is not None:
                return
        store.write_json_atomic(self.settings_path(), meta)

    def discard(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)

    def segment_paths(self) -> list[Path]:
        return sorted(self.dir.glob("seg-*.npz"))

    def write(self, results: Sequence[ImageResult], dim: int) -> Path:
        """One segment holding `results` (atomic: temporary file, fsync, rename)."""
        records = [r for res in results for r in res.records]
        emb = np.concatenate([res.embeddings for res in results if res.embeddings is not None] or
                             [np.zeros((0, dim), np.float32)]).astype(np.float32)
        cols = {"embeddings": emb, **store.prefixed("records", records_to_columns(records)),
                **store.prefixed("images", images_to_columns([res.entry for res in results]))}
        name = f"seg-{time.time_ns():020d}-{uuid.uuid4().hex[:6]}.npz"
        tmp = self.dir / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            np.savez(fh, **cols)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.dir / name)
        store.fsync_dir(self.dir)
        return self.dir / name

    def read(self, warn: Callable[[str], None] | None = None) -> list[tuple[np.ndarray, list[ObjectRecord], list[ImageEntry]]]:
        """Every readable segment as (embeddings, records, images); damaged ones are dropped
        with a warning (their images are simply done again)."""
        out = []
        for path in self.segment_paths():
            try:
                with np.load(path, allow_pickle=False) as z:
                    cols = {k: z[k] for k in z.files}
                rec = {k[8:]: v for k, v in cols.items() if k.startswith("records.")}
                img = {k[7:]: v for k, v in cols.items() if k.startswith("images.")}
                records = list(RecordTable(rec)) if len(rec.get("box", [])) else []
                images = images_from_columns(img)
                emb = cols["embeddings"]
                if len(emb) != len(records) or not np.isfinite(emb).all():
                    raise ValueError("embeddings do not match records or are not finite")
            except (ValueError, OSError, KeyError, EOFError) as exc:
                if warn:
                    warn(f"dropped damaged checkpoint {path.name} ({exc}); its images are indexed again")
                path.unlink(missing_ok=True)
                continue
            out.append((emb, records, images))
        return out


# ----------------------------------------------------------------------------- merging


def merge(base: Gallery | None, segments: Iterable[tuple[np.ndarray, list[ObjectRecord], list[ImageEntry]]],
          dim: int, view: str, metric: str, model_info: dict) -> Gallery:
    """A new in-memory gallery (exact index) of `base` plus `segments`, images already
    present dropped, in canonical order (source, image key, object order)."""
    per_image: dict[str, tuple[ImageEntry, list[int]]] = {}
    chunks, all_records = [], []
    offset = 0

    def take(emb, records, images):
        nonlocal offset
        rows_of: dict[str, list[int]] = {}
        for i, r in enumerate(records):
            rows_of.setdefault(r.image_key or f"record:{r.source}", []).append(offset + i)
        for entry in images:
            if entry.key not in per_image:
                per_image[entry.key] = (entry, rows_of.get(entry.key, []))
        known = {e.key for e in images}
        for key, rows in rows_of.items():  # objects not from a file (no image entry)
            if key not in known and key not in per_image:
                per_image[key] = (ImageEntry(key, records[rows[0] - offset].source, "ok", len(rows)), rows)
        chunks.append(emb)
        all_records.extend(records)
        offset += len(records)

    if base is not None and len(base.images) + len(base):
        take(np.asarray(base.embeddings), list(base.records), list(base.images))
    for emb, records, images in segments:
        take(emb, records, images)
    order = sorted(per_image.values(), key=lambda item: (item[0].source, item[0].key))
    rows = [r for _, rs in order for r in rs]
    gallery = Gallery(dim, view, metric, model_info)
    emb = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    gallery.add(emb[rows] if rows else np.zeros((0, dim), np.float32), [all_records[r] for r in rows])
    gallery.images = [entry for entry, _ in order if not entry.key.startswith("record:")]
    return gallery


def finalize(directory: str | Path, base: Gallery | None, journal: Journal, *, dim: int, view: str, metric: str,
             model_info: dict, index: IndexSettings, warn=None, progress=None) -> Gallery:
    """Publish base + pending segments as one new version (index by size); delete segments.
    The caller holds the writer lock."""
    directory = Path(directory)
    gallery = merge(base, journal.read(warn), dim, view, metric, model_info)
    if len(gallery):
        gallery.reindex(index, progress=progress)
        gallery.write_version(directory)
    journal.discard()
    return gallery


# ----------------------------------------------------------------------------- the run


def _stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _prepared_stream(tasks: Sequence[ImageTask], settings: IngestSettings, known: set) -> Iterator[Prepared]:
    """`prepare` over tasks in order, in `settings.workers` processes (bounded read-ahead)."""
    if settings.workers == 0:
        for task in tasks:
            yield prepare(task, settings.view, settings.oracle_masks, known)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    frozen = frozenset(known)
    with ProcessPoolExecutor(settings.workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(frozen,)) as pool:
        queue: deque = deque()
        it = iter(tasks)
        for task in it:
            queue.append(pool.submit(_prepare_in_worker, task, settings.view, settings.oracle_masks))
            if len(queue) >= 4 * settings.workers:
                yield queue.popleft().result()
        while queue:
            yield queue.popleft().result()


_WORKER_KNOWN: frozenset = frozenset()


def _init_worker(known: frozenset) -> None:
    global _WORKER_KNOWN
    _WORKER_KNOWN = known
    try:  # one thread per worker: the processes are the parallelism
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


def _prepare_in_worker(task: ImageTask, view: str, oracle: bool) -> Prepared:
    return prepare(task, view, oracle, _WORKER_KNOWN)


class _Meter:
    def __init__(self, total: int, progress):
        self.total, self.progress = total, progress
        self.t0 = time.perf_counter()
        self.new = self.skipped = self.unreadable = self.objects = 0

    def report(self, note: str = "") -> IngestProgress:
        elapsed = time.perf_counter() - self.t0
        done = self.new + self.skipped + self.unreadable
        ips = self.new / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / ips if ips > 0 else None
        p = IngestProgress(done, self.total, self.new, self.skipped, self.unreadable, self.objects, elapsed,
                           ips, self.objects / elapsed if elapsed > 0 else 0.0, eta, note)
        if self.progress:
            self.progress(p)
        return p


def gallery_meta(embedder, settings: IngestSettings, source: str) -> tuple[dict, dict]:
    """(model_info the gallery records, the run fingerprint checked on resume)."""
    masks = "automatic" if source == "folder" else ("ground truth" if settings.oracle_masks else "sam")
    model_info = {**embedder.model_info, "masks": masks}
    return model_info, {"dim": embedder.dim, "model": model_info, **settings.fingerprint()}


def open_for_append(directory: Path, *, append: bool, overwrite: bool, view: str, metric: str,
                    model_info: dict | None = None) -> Gallery | None:
    """The gallery to add to (None for a new one). ValueError when `directory` holds a gallery
    and neither append nor overwrite is set; GalleryMismatch when its view/metric/model differ."""
    has_gallery = (directory / store.POINTER).is_file() or (directory / "manifest.json").is_file()
    if not has_gallery or overwrite:
        return None
    if not append:
        raise ValueError(f"{directory} already holds a gallery: pass --append to add to it "
                         f"or --overwrite to replace it")
    return Gallery.load(directory, expect_view=view, expect_metric=metric, expect_model=model_info)


def ingest(directory: str | Path, tasks: Sequence[ImageTask], models, settings: IngestSettings | None = None, *,
           source: str = "folder", append: bool = False, overwrite: bool = False, discard_pending: bool = False,
           progress: Callable[[IngestProgress], None] | None = None, warn: Callable[[str], None] = _stderr,
           stop_after: int | None = None, runner=None) -> IngestReport:
    """Ingest `tasks` into the gallery at `directory` (created, resumed or added to).

    models: anything with `.segmenter` and `.embedder` (e.g. core.engine.Engine; the
    segmenter is only touched when masks must be computed). source: "folder" | "coco".
    append / overwrite: what to do with an existing gallery (else ValueError).
    stop_after: stop (without finalizing) after this many checkpoints (tests, benchmarks).
    runner: an alternative producer of ImageResults (core.gallery.ray_runner's Ray pipeline):
    runner(tasks, known_keys, settings, embedder_dim) -> iterator of ImageResult.
    Raises ValueError when nothing at all could be indexed (e.g. every image unreadable).
    """
    settings = settings or IngestSettings()
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"--out {directory} is a file, not a folder")
    t0 = time.perf_counter()
    embedder = models.embedder
    model_info, fingerprint = gallery_meta(embedder, settings, source)
    with store.writer_lock(directory, wait=False):
        store.cleanup(directory)
        journal = Journal(directory)
        if discard_pending:
            journal.discard()
        base = open_for_append(directory, append=append or journal.pending(), overwrite=overwrite,
                               view=settings.view, metric=settings.metric, model_info=model_info)
        if base is not None and base.dim != embedder.dim:
            raise GalleryMismatch(f"{directory} holds {base.dim}-d vectors; the model gives {embedder.dim}-d")
        journal.start({**fingerprint, "overwrite": bool(overwrite)})
        resumed = journal.read(warn)
        known = set(base.image_keys()) if base is not None else set()
        for _, _, images in resumed:
            known.update(e.key for e in images)
        meter = _Meter(len(tasks), progress)
        pending: list[ImageResult] = []
        checkpoints, last = 0, time.perf_counter()
        seen: set[str] = set(known)

        def commit() -> None:
            nonlocal pending, checkpoints, last
            if not pending:
                return
            if any(r.embeddings is None for r in pending):
                embed_results(pending, embedder, settings.clip_batch)
            write_result_thumbnails(directory, pending)   # before the segment: no record without one
            journal.write(pending, embedder.dim)
            pending, checkpoints, last = [], checkpoints + 1, time.perf_counter()
            meter.report(f"checkpoint {checkpoints}")

        results = runner(tasks, known, settings, embedder.dim) if runner is not None else \
            _local_results(tasks, known, settings, models)
        for result in results:
            if result is None:  # a skipped image
                meter.skipped += 1
                meter.report()
                continue
            if result.entry.key in seen:  # a copy of an image met earlier in this run
                meter.skipped += 1
                continue
            seen.add(result.entry.key)
            if result.entry.status != "ok":
                meter.unreadable += 1
                warn(f"skipped {Path(result.entry.source).name}: unreadable")
            else:
                meter.new += 1
                meter.objects += len(result.records)
            pending.append(result)
            if len(pending) >= settings.checkpoint_images or time.perf_counter() - last >= settings.checkpoint_seconds:
                commit()
                if stop_after is not None and checkpoints >= stop_after:
                    raise _Stopped()
            else:
                meter.report()
        commit()
        segments_before = len(journal.segment_paths())
        if base is not None and segments_before == 0:  # nothing new: the published gallery stands
            journal.discard()
            seconds = time.perf_counter() - t0
            return IngestReport(str(directory), len(tasks), meter.new, meter.skipped, meter.unreadable, 0,
                                len(base), len(resumed), 0, seconds, 0.0, 0.0, base.version,
                                {"kind": base.spec.kind, "factory": base.spec.factory, "params": base.spec.params,
                                 "segments": 0})
        if base is None and not any(len(r) for _, r, _ in journal.read()) and meter.objects == 0:
            journal.discard()
            raise ValueError(f"nothing indexed: {meter.new} readable image(s) gave no objects, "
                             f"{meter.unreadable} unreadable, {meter.skipped} already known")
        gallery = finalize(directory, base, journal, dim=embedder.dim, view=settings.view, metric=settings.metric,
                           model_info=model_info, index=settings.index, warn=warn)
        seconds = time.perf_counter() - t0
        meter.report("published")
        return IngestReport(str(directory), len(tasks), meter.new, meter.skipped, meter.unreadable, meter.objects,
                            len(gallery), len(resumed), checkpoints, seconds, meter.new / seconds if seconds else 0.0,
                            meter.objects / seconds if seconds else 0.0, gallery.version,
                            {"kind": gallery.spec.kind, "factory": gallery.spec.factory,
                             "params": gallery.spec.params, "segments": segments_before})


class _Stopped(Exception):
    """Raised by `stop_after` to end a run between checkpoints (like a kill, but clean)."""


def _local_results(tasks, known, settings: IngestSettings, models) -> Iterator[ImageResult | None]:
    """ImageResults (crops rendered, not embedded) of this machine's pipeline; None = skipped."""
    for prepared in _prepared_stream(tasks, settings, known):
        if prepared.skipped:
            yield None
            continue
        if prepared.error is not None:
            yield image_result(prepared, None, settings.view)
            continue
        objects = find_objects(prepared, models.segmenter if prepared.objects is None else None, settings)
        yield image_result(prepared, objects, settings.view, prepared.crops, settings.thumbnails)


def run_stopping(*args, **kwargs) -> bool:
    """`ingest(..., stop_after=N)`: True when it stopped early, False when it finished."""
    try:
        ingest(*args, **kwargs)
        return False
    except _Stopped:
        return True
