"""How a gallery lies on disk: versioned directories behind an atomic pointer, columnar
records, file locks, schema checks and the cleanup of leftovers.

Layout (format 2)::

    gallery/
      CURRENT                 {"version": "v-<id>"}: the one version readers open
      v-<id>/                 one complete, immutable version
        manifest.json         dims, view, metric, model, count, index choice + tuned search
                              parameters, and every file with its size in bytes
        embeddings.npy        (N, D) float32 unit rows (memory-mapped on load)
        index.faiss           the faiss index (memory-mapped where faiss allows)
        records/<column>.npy  one array per record field (see `records_to_columns`)
        images/<column>.npy   one row per source image seen: content key, source, status
      v-<id>.partial/         a version being written (renamed when complete)
      ingest/                 checkpoints of an unfinished `index` run (see core.gallery.ingest)
      thumbs/<k[:2]>/<k>/*.jpg  object thumbnails by image content key k, shared by every
                              version (see core.gallery.thumbs)
      .write.lock, .read.lock flock(2) files

Writers hold `.write.lock` exclusively for the whole save; readers hold `.read.lock`
shared while they open a version. A save writes `v-<id>.partial/`, fsyncs it, renames it
to `v-<id>`, then replaces CURRENT atomically (``os.replace``), so a reader sees the old
version or the new one, never a mix. Old versions are removed only when no reader holds
the read lock (else at the next save); `.partial` directories and temporary files left by
a killed writer are removed by the next writer (`cleanup`). Readers also retry when a
version vanishes under them (platforms without flock).

Columns (no pickles: every array loads with allow_pickle=False): strings are stored as
UTF-8 bytes (`<name>.data.npy`, uint8) plus offsets (`<name>.offsets.npy`, int64, N+1; a
None is offsets[i] == offsets[i+1] with `<name>.null.npy` True), small vocabularies
(source, view, category, image key) as a string table plus int32 codes.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

try:  # POSIX advisory locks; elsewhere readers rely on retrying
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

FORMAT_VERSION = 2
POINTER = "CURRENT"
INGEST_DIR = "ingest"


class GalleryCorrupt(ValueError):
    """A gallery file is missing, damaged or inconsistent with the manifest."""


# ----------------------------------------------------------------------------- locks


@contextlib.contextmanager
def file_lock(path: Path, exclusive: bool, blocking: bool = True) -> Iterator[bool]:
    """flock(2) `path` (created if missing) shared or exclusive; yields whether it is held.

    With blocking=False the block still runs and gets False when the lock is busy.
    Without fcntl (Windows) it yields True and locks nothing.
    """
    if fcntl is None:
        yield True
        return
    try:
        fh = open(path, "a+")
    except OSError:  # read-only gallery: nobody can be writing it
        yield True
        return
    try:
        flags = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(fh.fileno(), flags)
            held = True
        except BlockingIOError:
            held = False
        try:
            yield held
        finally:
            if held:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    finally:
        fh.close()


class GalleryBusy(RuntimeError):
    """Another process is writing this gallery."""


@contextlib.contextmanager
def writer_lock(directory: Path, wait: bool = True) -> Iterator[None]:
    """Hold the gallery's writer lock (one writer at a time); GalleryBusy if not `wait`."""
    directory.mkdir(parents=True, exist_ok=True)
    with file_lock(directory / ".write.lock", exclusive=True, blocking=wait) as held:
        if not held:
            raise GalleryBusy(f"gallery {directory} is being written by another process; "
                              f"wait for it to finish")
        yield


# ----------------------------------------------------------------------------- fsync helpers


def fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json_atomic(path: Path, data) -> None:
    """Write JSON to `path` via a fsynced temporary file and os.replace."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)


# ----------------------------------------------------------------------------- columns


def pack_strings(values: Sequence[str | None]) -> dict[str, np.ndarray]:
    """{"data": uint8 UTF-8 bytes, "offsets": int64 (N+1), "null": bool (N)} of `values`."""
    encoded = [b"" if v is None else v.encode("utf-8") for v in values]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    if encoded:
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
    data = np.frombuffer(b"".join(encoded), np.uint8) if encoded else np.zeros(0, np.uint8)
    return {"data": data, "offsets": offsets, "null": np.array([v is None for v in values], bool)}


class StringColumn:
    """Read side of `pack_strings`: item i is a str or None (decoded on access)."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray, null: np.ndarray):
        self.data, self.offsets, self.null = data, offsets, null

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str | None:
        if self.null[i]:
            return None
        return self.data[self.offsets[i]:self.offsets[i + 1]].tobytes().decode("utf-8")

    def tolist(self) -> list[str | None]:
        return [self[i] for i in range(len(self))]


def pack_vocab(values: Sequence[str | None]) -> dict[str, np.ndarray]:
    """A small vocabulary column: {"codes": int32 (-1 = None), plus the packed string table}."""
    table: dict[str, int] = {}
    codes = np.fromiter((-1 if v is None else table.setdefault(v, len(table)) for v in values),
                        np.int32, count=len(values))
    return {"codes": codes, **{f"vocab.{k}": a for k, a in pack_strings(list(table)).items()}}


class VocabColumn:
    """Read side of `pack_vocab`."""

    def __init__(self, codes: np.ndarray, vocab: StringColumn):
        self.codes = codes
        self.vocab = [vocab[i] for i in range(len(vocab))]

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: int) -> str | None:
        c = int(self.codes[i])
        return None if c < 0 else self.vocab[c]

    def tolist(self) -> list[str | None]:
        return [self[i] for i in range(len(self))]


def save_columns(directory: Path, columns: dict[str, np.ndarray]) -> dict[str, int]:
    """Write each array as `<directory>/<name>.npy`; returns {file name: bytes}."""
    directory.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name, array in columns.items():
        path = directory / f"{name}.npy"
        np.save(path, np.ascontiguousarray(array), allow_pickle=False)
        sizes[path.name] = path.stat().st_size
    return sizes


def load_columns(directory: Path, mmap: bool = True) -> dict[str, np.ndarray]:
    """The arrays written by `save_columns` (memory-mapped when `mmap`)."""
    out = {}
    for path in sorted(directory.glob("*.npy")):
        out[path.name[:-4]] = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    return out


def string_column(columns: dict[str, np.ndarray], name: str) -> StringColumn:
    return StringColumn(columns[f"{name}.data"], columns[f"{name}.offsets"], columns[f"{name}.null"])


def vocab_column(columns: dict[str, np.ndarray], name: str) -> VocabColumn:
    return VocabColumn(columns[f"{name}.codes"], string_column(columns, f"{name}.vocab"))


def prefixed(prefix: str, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{prefix}.{k}": v for k, v in columns.items()}


# ----------------------------------------------------------------------------- versions


def new_version_name() -> str:
    """A fresh version directory name: v-<time>-<random> (sorts by creation time)."""
    return f"v-{time.time_ns():020d}-{uuid.uuid4().hex[:6]}"


def read_pointer(directory: Path) -> str | None:
    """The version CURRENT names, or None when there is none (not a format-2 gallery)."""
    path = directory / POINTER
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        version = data["version"]
    except (ValueError, KeyError, TypeError) as exc:
        raise GalleryCorrupt(f"{path} is damaged ({exc}); rebuild the gallery or restore the file") from None
    if not isinstance(version, str) or "/" in version or not version.startswith("v-"):
        raise GalleryCorrupt(f"{path} names an invalid version {version!r}")
    return version


@contextlib.contextmanager
def staged_version(directory: Path) -> Iterator[tuple[Path, str]]:
    """Yield (partial directory, version name) to fill; on success it is renamed into place
    and made CURRENT atomically. On error the partial directory is removed."""
    name = new_version_name()
    partial = directory / f"{name}.partial"
    partial.mkdir(parents=True)
    try:
        yield partial, name
        for path in partial.rglob("*"):
            if path.is_file():
                fsync_file(path)
        for sub in [p for p in partial.rglob("*") if p.is_dir()] + [partial]:
            fsync_dir(sub)
        final = directory / name
        os.rename(partial, final)
        fsync_dir(directory)
        write_json_atomic(directory / POINTER, {"version": name})
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def cleanup(directory: Path, *, keep: Iterable[str] = ()) -> list[str]:
    """Remove leftovers of a gallery directory; call with the writer lock held.

    Always removes `*.partial` version directories and temporary files of killed writers;
    removes versions other than CURRENT (and files of the format-1 layout) only when no
    reader holds the read lock. Returns the names removed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    try:
        current = read_pointer(directory) if (directory / POINTER).is_file() else None
    except GalleryCorrupt:  # a damaged pointer: keep every version until a save replaces it
        current = None
    for path in directory.iterdir():
        if path.name.endswith(".partial") or (path.name.startswith(".") and path.name.endswith(".tmp")):
            _remove(path)
            removed.append(path.name)
    with file_lock(directory / ".read.lock", exclusive=True, blocking=False) as no_readers:
        if no_readers and current is not None:
            keep = set(keep) | {current}
            for path in directory.iterdir():
                legacy = path.name == "manifest.json" or (
                    path.suffix in (".faiss", ".jsonl", ".npy") and path.name.split("-")[0] in
                    ("index", "records", "embeddings")) or path.name.startswith("manifest-")
                old_version = path.is_dir() and path.name.startswith("v-") and path.name not in keep
                if legacy or old_version:
                    _remove(path)
                    removed.append(path.name)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def reading(directory: Path) -> Iterator[None]:
    """Hold the read lock while a version is opened (writers then keep its files); a
    directory without CURRENT is not locked (nothing is created in it)."""
    if not (directory / POINTER).is_file():
        yield
        return
    with file_lock(directory / ".read.lock", exclusive=False):
        yield


def check_files(version_dir: Path, files: dict) -> None:
    """GalleryCorrupt unless every file the manifest lists exists with its recorded size."""
    if not isinstance(files, dict):
        raise GalleryCorrupt(f"{version_dir}/manifest.json: 'files' must map names to sizes")
    for name, size in files.items():
        path = version_dir / name
        if ".." in Path(name).parts:
            raise GalleryCorrupt(f"{version_dir}/manifest.json lists an invalid file {name!r}")
        try:
            actual = path.stat().st_size
        except FileNotFoundError:
            raise GalleryCorrupt(f"{path} is missing (the manifest lists it); rebuild the gallery") from None
        if actual != size:
            raise GalleryCorrupt(f"{path} has {actual} bytes but the manifest says {size}: the file "
                                 f"is damaged or was replaced; rebuild the gallery")
