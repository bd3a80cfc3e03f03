"""A folder in, a dataset out: the job's proposals for every image of a folder, resumable, then
the set written in the chosen formats (`core.io.formats`).

    out/.work/job.json            the job's fingerprint (a rerun with other settings is refused)
    out/.work/results/<key>.json  one image's result, written atomically when it is done
    out/failures.json             the images that failed this run, with the reason
    out/<format files>            the exports, rebuilt from every result at the end

A killed run loses at most the images in flight: rerun, it skips the images with a result
and the exports equal those of one uninterrupted run (the models are deterministic). A
corrupt or unreadable image is listed in failures.json and skipped; it never stops a run.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from core.dataset.propose import LabelJob, propose
from core.io.formats import export_set, read_set
from core.io.images import ImageError, load_image
from core.io.labels import ExportMeta, LabelledImage, LabelledObject
from core.io.masks import mask_to_rle, rle_to_mask

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
WORK = ".work"


def list_images(folder: Path, skip: Path | None = None) -> list[str]:
    """Relative '/' paths of the image files under `folder` (recursive, sorted; hidden entries
    and the `skip` folder, e.g. the output inside the input, left out)."""
    folder = Path(folder)
    skip = Path(skip).resolve() if skip else None
    found = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if skip is not None and (path.resolve() == skip or skip in path.resolve().parents):
            continue
        if path.is_file():
            found.append(rel.as_posix())
    return sorted(found)


# ----------------------------------------------------------------------------- one image's result
def object_record(obj: LabelledObject) -> dict:
    """The JSON record of one object (mask as COCO RLE)."""
    return {"rle": mask_to_rle(obj.mask), "category": obj.category, "score": obj.score, "margin": obj.margin,
            "origin": obj.origin, "reviewed": obj.reviewed, "hidden": obj.hidden}


def object_of(record: dict) -> LabelledObject:
    """The LabelledObject of an object record (a record without flags is an unreviewed proposal)."""
    return LabelledObject(rle_to_mask(record["rle"]), record["category"], score=record.get("score"),
                          origin=record.get("origin", "proposal"), reviewed=bool(record.get("reviewed", False)),
                          hidden=bool(record.get("hidden", False)), margin=record.get("margin"))


def result_record(file_name: str, height: int, width: int, objects: list[LabelledObject]) -> dict:
    """The JSON record of one image and its objects."""
    return {"file_name": file_name, "height": height, "width": width, "objects": [object_record(o) for o in objects]}


def failure_record(file_name: str, reason: str) -> dict:
    return {"file_name": file_name, "error": reason}


def image_of(record: dict) -> LabelledImage:
    """The LabelledImage of a result record."""
    return LabelledImage(record["file_name"], int(record["height"]), int(record["width"]),
                         [object_of(o) for o in record["objects"]])


def label_file(engine, folder: Path, file_name: str, job: LabelJob) -> dict:
    """One image of the folder -> its result record, or a failure record for a bad image."""
    try:
        image = load_image(Path(folder) / file_name)
    except (ImageError, OSError) as exc:
        return failure_record(file_name, str(exc) or type(exc).__name__)
    objects = propose(engine, image, job)
    return result_record(file_name, int(image.shape[0]), int(image.shape[1]), objects)


# ----------------------------------------------------------------------------- the work folder
class WorkDir:
    """out/.work: the job's fingerprint and one result file per finished image."""

    def __init__(self, out: Path, fingerprint: dict):
        self.root = Path(out) / WORK
        (self.root / "results").mkdir(parents=True, exist_ok=True)
        job_file = self.root / "job.json"
        if job_file.is_file():
            previous = json.loads(job_file.read_text())
            if previous != fingerprint:
                raise ValueError(f"{out} holds a run with other settings ({_diff(previous, fingerprint)}); "
                                 "use another --out, or delete it to start again")
        else:
            _atomic_write(job_file, json.dumps(fingerprint, sort_keys=True))

    def path(self, file_name: str) -> Path:
        return self.root / "results" / f"{hashlib.sha1(file_name.encode()).hexdigest()}.json"

    def done(self, file_name: str) -> bool:
        return self.path(file_name).is_file()

    def save(self, record: dict) -> None:
        _atomic_write(self.path(record["file_name"]), json.dumps(record))

    def load(self, file_name: str) -> dict | None:
        path = self.path(file_name)
        return json.loads(path.read_text()) if path.is_file() else None


def _diff(a: dict, b: dict) -> str:
    return ", ".join(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)) or "unknown"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- the run
@dataclass
class FolderRun:
    """What a folder run did: images listed, computed now, found done (resumed), failures
    [(file, reason)], the written files by format."""

    images: int = 0
    computed: int = 0
    resumed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    files: dict[str, list[Path]] = field(default_factory=dict)


#: A runner computes the records of the pending images, in any order: (files) -> records.
Runner = Callable[[list[str]], Iterable[dict]]


def local_runner(engine, folder: Path, job: LabelJob) -> Runner:
    """Images one after the other in this process (one model load)."""
    def run(files: list[str]) -> Iterator[dict]:
        for name in files:
            yield label_file(engine, folder, name, job)
    return run


def label_folder(folder: str | Path, out: str | Path, job: LabelJob, runner: Runner, *,
                 formats: str | list[str] = "coco", meta: ExportMeta | None = None,
                 progress: Callable[[int, int, str], None] | None = None) -> FolderRun:
    """Label every image of `folder` into `out` (see the module docstring); `progress(done,
    total, file_name)` after each image. Images already done in `out` are not recomputed."""
    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    files = list_images(folder, skip=out)
    if not files:
        raise ValueError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    work = WorkDir(out, job.fingerprint())
    pending = [f for f in files if not work.done(f)]
    run = FolderRun(images=len(files), resumed=len(files) - len(pending))
    failures: dict[str, str] = {}
    done = run.resumed
    if progress:
        progress(done, len(files), "")
    for record in runner(pending):
        if "error" in record:
            failures[record["file_name"]] = record["error"]
        else:
            work.save(record)
            run.computed += 1
        done += 1
        if progress:
            progress(done, len(files), record["file_name"])
    run.failures = sorted(failures.items())
    (out / "failures.json").write_text(json.dumps([{"file_name": f, "reason": r} for f, r in run.failures], indent=1))
    images = [image_of(work.load(f)) for f in files if work.done(f)]
    run.files = export_set(out, images, job.categories(), formats, meta=meta, image_root=folder)
    return run


def examples_from_file(path: Path, folder: Path) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """Example objects from a COCO / LabelMe / YOLO file (`core.io.formats.read_set`): each
    (image, mask, category); images looked up beside the file, then in `folder`."""
    path = Path(path)
    images, _ = read_set(path)
    base = path if path.is_dir() else path.parent
    out = []
    for labelled in images:
        source = next((p for p in (base / labelled.file_name, Path(folder) / labelled.file_name) if p.is_file()), None)
        if source is None:
            raise FileNotFoundError(f"the example image {labelled.file_name} is neither beside {path.name} "
                                    f"nor in {folder}")
        image = load_image(source)
        if image.shape[:2] != (labelled.height, labelled.width):
            raise ValueError(f"{labelled.file_name} is {image.shape[1]}x{image.shape[0]}, the examples say "
                             f"{labelled.width}x{labelled.height}")
        out += [(image, o.mask, o.category) for o in labelled.objects]
    if not out:
        raise ValueError(f"{path} names no example objects")
    return out
