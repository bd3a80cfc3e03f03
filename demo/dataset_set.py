"""A session's set of images (the Dataset panel's state), kept on disk in the session's folder
so memory stays small whatever the set's size:

    <session folder>/dataset/images/<name>       the uploads (nested names kept)
    <session folder>/dataset/labels/<key>.json   each image's objects (masks as COCO RLE)
    <session folder>/dataset/thumbs/<key>.jpg    the strip's thumbnails
    <session folder>/dataset/exports/            the last export

In memory: the names, sizes and object counts only. Bounded by settings.SET_MAX_IMAGES and
settings.SET_DISK_MB; deleted with the session's folder when the session ends.

"Apply to all" runs as a background job (`ApplyJob`): one image at a time on a small pool
shared by every session (settings.SET_JOB_WORKERS), each job handing its next image back to
the pool's queue, so jobs of several people take turns and clicks (their own queue group)
never wait behind a whole set. Proposals are merged with `core.dataset.review.merge_proposals`:
what a person made or reviewed is never overwritten.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from core.dataset.folder import IMAGE_SUFFIXES, object_of, object_record
from core.dataset.propose import LabelJob, example_features, propose
from core.dataset.review import Doubt, doubts, merge_proposals, review_queue
from core.io.archive import ArchiveError, ArchiveLimits, extract_images
from core.io.formats import export_set
from core.io.images import ImageError, load_image
from core.io.labels import ExportMeta, LabelledImage, LabelledObject
from demo import settings as serving
from demo.state import UserError

STATES = ("not started", "proposed", "reviewed")
THUMB_SIDE = 160
MAX_EXAMPLES = 64
_POOL = ThreadPoolExecutor(max_workers=max(1, serving.SET_JOB_WORKERS), thread_name_prefix="set-job")


def _key(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()[:20]


def folder_bytes(root: Path) -> int:
    """Bytes of the files under `root`."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@dataclass
class ImageEntry:
    """One image of the set: name, (H, W) at full size, unreviewed proposals and reviewed/user objects."""

    name: str
    size: tuple[int, int]
    proposals: int = 0
    reviewed: int = 0
    started: bool = False

    @property
    def state(self) -> str:
        if not self.started and not (self.proposals or self.reviewed):
            return "not started"
        return "proposed" if self.proposals else "reviewed"


class ImageSet:
    """A session's image set on disk (see the module docstring); thread-safe."""

    def __init__(self, root: Path, max_images: int | None = None, max_bytes: int | None = None):
        self.root = Path(root)
        self.max_images = max_images or serving.SET_MAX_IMAGES
        self.max_bytes = max_bytes or serving.SET_DISK_MB * 1024 * 1024
        for sub in ("images", "labels", "thumbs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.entries: list[ImageEntry] = []
        self.used = folder_bytes(self.root)                    # bytes on disk, kept up to date by adds
        self.lock = threading.RLock()
        self.job: ApplyJob | None = None

    # ---- adding images ------------------------------------------------------------
    def add_files(self, paths: list[str]) -> list[str]:
        """Add uploaded images and zips; returns one line per file skipped (with the reason).
        UserError when the set is full or over its disk quota."""
        notes = []
        self.used = folder_bytes(self.root)                    # labels and exports change it too
        for path in paths:
            source = Path(path)
            if source.suffix.lower() == ".zip":
                notes += self._add_zip(source)
            else:
                notes += self._add_image(source, source.name)
        return notes

    def _room(self) -> int:
        return self.max_images - len(self.entries)

    def _check_quota(self, extra: int = 0) -> None:
        if self.used + extra > self.max_bytes:
            raise UserError(f"This set has used its {self.max_bytes // 2**20} MB of disk: export it, "
                            "or remove images, before adding more.")

    def _add_zip(self, source: Path) -> list[str]:
        if self._room() <= 0:
            raise UserError(f"The set is full ({self.max_images} images).")
        self._check_quota(source.stat().st_size)
        staging = self.root / f"unpack-{os.getpid()}-{threading.get_ident()}"
        limits = ArchiveLimits(max_images=self._room(), max_total_bytes=self.max_bytes)
        try:
            result = extract_images(source, staging, limits)
        except ArchiveError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise UserError(f"{source.name}: {exc}") from exc
        notes = [f"{source.name}: {name}: {reason}" for name, reason in result.skipped if reason != "a folder"]
        notes += [f"{source.name}: {name} saved as {new}" for name, new in result.renamed]
        for name in result.extracted:
            notes += self._add_image(staging / name, name)
        shutil.rmtree(staging, ignore_errors=True)
        return notes

    def _add_image(self, source: Path, name: str) -> list[str]:
        if source.suffix.lower() not in IMAGE_SUFFIXES:
            return [f"{name}: not an image file"]
        with self.lock:
            if self._room() <= 0:
                return [f"{name}: the set is full ({self.max_images} images)"]
            self._check_quota(source.stat().st_size)
            try:
                image = load_image(source)
            except (ImageError, OSError) as exc:
                return [f"{name}: {exc}"]
            name = self._free_name(name)
            target = self.root / "images" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            self._thumb(name, image)
            self.used += target.stat().st_size + self.thumb_path(name).stat().st_size
            self.entries.append(ImageEntry(name, (int(image.shape[0]), int(image.shape[1]))))
        return []

    def _free_name(self, name: str) -> str:
        taken = {e.name.lower() for e in self.entries}
        if name.lower() not in taken:
            return name
        stem, _, suffix = name.rpartition(".")
        n = 2
        while f"{stem}-{n}.{suffix}".lower() in taken:
            n += 1
        return f"{stem}-{n}.{suffix}"

    def _thumb(self, name: str, image: np.ndarray) -> None:
        pil = Image.fromarray(image)
        pil.thumbnail((THUMB_SIDE, THUMB_SIDE))
        pil.save(self.thumb_path(name), format="JPEG", quality=80)

    # ---- reading ------------------------------------------------------------------
    def thumb_path(self, name: str) -> Path:
        return self.root / "thumbs" / f"{_key(name)}.jpg"

    def image_path(self, name: str) -> Path:
        return self.root / "images" / name

    def entry(self, index: int) -> ImageEntry:
        if not self.entries:
            raise UserError("The set is empty: upload images or a zip first.")
        return self.entries[int(index) % len(self.entries)]

    def index_of(self, name: str) -> int:
        return next(i for i, e in enumerate(self.entries) if e.name == name)

    def objects(self, name: str) -> list[LabelledObject]:
        path = self.root / "labels" / f"{_key(name)}.json"
        if not path.is_file():
            return []
        return [object_of(r) for r in json.loads(path.read_text())["objects"]]

    def save(self, name: str, objects: list[LabelledObject], started: bool = True) -> None:
        """Store an image's objects (atomically) and update its counts."""
        with self.lock:
            entry = self.entries[self.index_of(name)]
            path = self.root / "labels" / f"{_key(name)}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"file_name": name, "objects": [object_record(o) for o in objects]}))
            os.replace(tmp, path)
            entry.proposals = sum(1 for o in objects if not o.reviewed)
            entry.reviewed = sum(1 for o in objects if o.reviewed)
            entry.started = entry.started or started

    def summary(self) -> str:
        """"12 images: 3 not started, 7 proposed, 2 reviewed; 41 proposals, 9 reviewed objects"."""
        counts = {s: sum(1 for e in self.entries if e.state == s) for s in STATES}
        return (f"{len(self.entries)} image(s): " + ", ".join(f"{counts[s]} {s}" for s in STATES)
                + f"; {sum(e.proposals for e in self.entries)} proposal(s) to review, "
                  f"{sum(e.reviewed for e in self.entries)} reviewed object(s)")

    # ---- review -------------------------------------------------------------------
    def queue(self, limit: int = 50) -> list[Doubt]:
        """The most doubtful unreviewed proposals of the whole set, first `limit`."""
        items = []
        for entry in list(self.entries):
            if entry.proposals:
                items += doubts(entry.name, self.objects(entry.name))
        return review_queue(items)[:limit]

    def decide(self, name: str, index: int, accept: bool) -> None:
        """Accept (reviewed) or reject (removed) the unreviewed object `index` of image `name`."""
        with self.lock:
            objects = self.objects(name)
            if not 0 <= index < len(objects) or objects[index].reviewed:
                raise UserError("That proposal is gone (already reviewed, or replaced): refresh the queue.")
            if accept:
                objects[index].reviewed = True
            else:
                del objects[index]
            self.save(name, objects)

    def decide_all(self, name: str, accept: bool) -> int:
        """Accept or reject every unreviewed proposal of one image; how many."""
        with self.lock:
            objects = self.objects(name)
            n = sum(1 for o in objects if not o.reviewed)
            objects = [o for o in objects if o.reviewed or accept]
            for o in objects:
                o.reviewed = True
            self.save(name, objects)
            return n

    # ---- export -------------------------------------------------------------------
    def export(self, formats: list[str], reviewed_only: bool, meta: ExportMeta) -> Path:
        """The whole set (or its reviewed objects) in `formats`, zipped; returns the zip."""
        if not self.entries:
            raise UserError("The set is empty: nothing to export.")
        out = self.root / "exports"
        shutil.rmtree(out, ignore_errors=True)
        images = [LabelledImage(e.name, *e.size, self.objects(e.name)) for e in list(self.entries)]
        categories = list(dict.fromkeys(o.category for im in images for o in im.objects))
        staging = out / "dataset"
        export_set(staging, images, categories, formats, reviewed_only=reviewed_only, meta=meta,
                   image_root=self.root / "images")
        archive = out / "dataset.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
            for path in sorted(staging.rglob("*")):
                if path.is_file():
                    z.write(path, path.relative_to(staging).as_posix())
        shutil.rmtree(staging, ignore_errors=True)
        self.used = folder_bytes(self.root)
        if self.used > self.max_bytes:
            shutil.rmtree(out, ignore_errors=True)
            self.used = folder_bytes(self.root)
            raise UserError(f"The export does not fit in this set's {self.max_bytes // 2**20} MB: "
                            "choose fewer formats, or reviewed objects only.")
        return archive

    def close(self) -> None:
        """Stop a running job (the files go with the session's folder)."""
        if self.job is not None:
            self.job.cancel()


@dataclass
class ApplyJob:
    """"Apply to all" on a set: a phrase, a vocabulary and/or the set's reviewed objects as
    examples (their features computed first, in the background). Progress: done of total,
    started, cancelled, errors."""

    images: ImageSet
    engine: object
    names: list[str]
    phrase: str | None = None
    vocabulary: str | None = None
    use_examples: bool = False
    automask: object = None
    work_side: int = 1024
    done: int = 0
    errors: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    finished: bool = False
    note: str = ""
    job: LabelJob | None = None
    _cancel: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if not (self.phrase or self.vocabulary or self.use_examples):
            raise UserError("Say what to apply: a phrase, a vocabulary, or the reviewed objects as examples.")
        if self.phrase:
            LabelJob(phrase=self.phrase)                       # a phrase without a noun is refused now

    @property
    def total(self) -> int:
        return len(self.names)

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def start(self) -> None:
        _POOL.submit(self._first)

    def _first(self) -> None:
        try:
            examples = self._examples() if self.use_examples else ()
            self.job = LabelJob(phrase=self.phrase, vocabulary=self.vocabulary, examples=examples,
                                **({"automask": self.automask} if self.automask is not None else {}))
        except Exception as exc:                               # shown in the progress line
            self.note, self.finished = f"(examples: {exc})", True
            return
        self._next()

    def _examples(self) -> tuple:
        """The features of the set's reviewed objects (at most MAX_EXAMPLES), by class."""
        found = []
        for entry in list(self.images.entries):
            for obj in self.images.objects(entry.name):
                if obj.reviewed and len(found) < MAX_EXAMPLES:
                    found.append((entry.name, obj))
        if not found:
            raise UserError("no reviewed or named objects yet to use as examples")
        pictures: dict[str, np.ndarray] = {}
        triples = []
        for name, obj in found:
            if name not in pictures:
                pictures[name] = load_image(self.images.image_path(name))
            triples.append((pictures[name], obj.mask, obj.category))
        grounding = LabelJob(vocabulary="x", **({"automask": self.automask} if self.automask else {})).grounding
        return example_features(self.engine.embedder, triples, grounding)

    def _next(self) -> None:
        """Label the next image, then queue the one after (other jobs' images take turns)."""
        if self.cancelled or self.done >= self.total:
            self.finished = True
            return
        name = self.names[self.done]
        try:
            self._label(name)
        except Exception as exc:                               # one bad image never stops the set
            self.errors.append(f"{name}: {exc}")
        self.done += 1
        _POOL.submit(self._next)

    def _label(self, name: str) -> None:
        full = load_image(self.images.image_path(name))
        work = _downscaled(full, self.work_side)
        proposals = propose(self.engine, work, self.job)
        if work.shape != full.shape:
            for p in proposals:
                p.mask = _upscaled(p.mask, full.shape[:2])
        with self.images.lock:
            self.images.save(name, merge_proposals(self.images.objects(name), proposals))

    def progress(self) -> str:
        """"Applying 'dogs': 12 of 50 images, about 3 min left" (or the final line)."""
        elapsed = time.monotonic() - self.started
        if self.finished or self.cancelled:
            state = "cancelled" if self.cancelled else "done"
            errors = f"; {len(self.errors)} image(s) failed: " + "; ".join(self.errors[:3]) if self.errors else ""
            return f"{state}: {self.done} of {self.total} image(s) in {elapsed:.0f} s{errors}{' ' + self.note if self.note else ''}"
        left = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        eta = f", about {left / 60:.1f} min left" if self.done else ""
        return f"applying: {self.done} of {self.total} image(s){eta}"


def _downscaled(image: np.ndarray, side: int) -> np.ndarray:
    h, w = image.shape[:2]
    if max(h, w) <= side:
        return image
    scale = side / max(h, w)
    return np.asarray(Image.fromarray(image).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                    Image.BILINEAR))


def _upscaled(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    pil = Image.fromarray(mask.astype(np.uint8) * 255).resize((size[1], size[0]), Image.NEAREST)
    return np.asarray(pil) > 127
