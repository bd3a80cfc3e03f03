"""Reading an uploaded archive of images safely: a zip in, image files under one target folder
out, every other entry refused or skipped with a reason; nothing is ever written outside the
target folder.

Refused (the whole archive, `ArchiveError`): not a zip; more entries than `max_entries`;
declared uncompressed total over `max_total_bytes`; an entry whose compression ratio exceeds
`max_ratio` (a zip bomb), also when the headers lie (sizes are counted while reading).
Skipped (listed with the reason): folders, links, encrypted entries, unsafe names (absolute,
`..`, drive letters), hidden/system files (`__MACOSX/`, `.DS_Store`), non-image extensions,
empty files, files over `max_file_bytes`, contents that are not a readable image, images
past `max_images`, and exact duplicates of an earlier entry. Nested folders are kept as
relative paths; a name taken by different content gets a suffix ("a-2.jpg", listed).
"""
from __future__ import annotations

import hashlib
import io
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
CHUNK = 1 << 16


class ArchiveError(ValueError):
    """An archive refused as a whole, with a message fit for a person."""


@dataclass(frozen=True)
class ArchiveLimits:
    """max_entries: entries in the archive; max_total_bytes: uncompressed bytes of all entries;
    max_file_bytes: of one image; max_ratio: uncompressed / compressed size of one entry;
    max_images: images extracted."""

    max_entries: int = 5000
    max_total_bytes: int = 1 << 30
    max_file_bytes: int = 50 << 20
    max_ratio: float = 100.0
    max_images: int = 500


@dataclass
class ArchiveResult:
    """extracted: relative '/' paths written under the target; skipped: (entry name, reason);
    renamed: (entry name, the name it was written as)."""

    extracted: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)


def safe_name(name: str) -> str | None:
    """The entry's relative '/' path, or None when it is unsafe (absolute, '..', drive letter,
    control characters) or hidden (a part starting with '.', or __MACOSX)."""
    text = name.replace("\\", "/")
    if not text or text.startswith("/") or (len(text) > 1 and text[1] == ":") or any(ord(c) < 32 for c in text):
        return None
    parts = [p for p in PurePosixPath(text).parts if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def _hidden(rel: str) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in rel.split("/"))


def extract_images(source: str | Path | bytes, target: str | Path, limits: ArchiveLimits | None = None) -> ArchiveResult:
    """Extract the images of the zip `source` (path or bytes) under `target` (see the module docstring)."""
    limits = limits or ArchiveLimits()
    target = Path(target).resolve()
    target.mkdir(parents=True, exist_ok=True)
    try:
        archive = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"this is not a zip archive ({exc})") from exc
    with archive:
        entries = archive.infolist()
        _check_archive(entries, limits)
        result, seen = ArchiveResult(), {}
        for info in entries:
            reason = _entry_reason(info, limits)
            rel = safe_name(info.filename)
            if reason is None and rel is None:
                reason = "unsafe path (absolute, '..' or a drive letter): not extracted"
            if reason is None and _hidden(rel):
                reason = "hidden or system file"
            if reason is None and PurePosixPath(rel).suffix.lower() not in IMAGE_SUFFIXES:
                reason = "not an image (by its extension)"
            if reason is None and len(result.extracted) >= limits.max_images:
                reason = f"over the limit of {limits.max_images} images"
            if reason is None:
                reason = _extract_one(archive, info, rel, target, limits, result, seen)
            if reason:
                result.skipped.append((info.filename, reason))
    return result


def _check_archive(entries: list[zipfile.ZipInfo], limits: ArchiveLimits) -> None:
    if len(entries) > limits.max_entries:
        raise ArchiveError(f"the archive has {len(entries)} entries; the limit is {limits.max_entries}")
    total = sum(i.file_size for i in entries)
    if total > limits.max_total_bytes:
        raise ArchiveError(f"the archive unpacks to {total / 2**20:.0f} MB; the limit is "
                           f"{limits.max_total_bytes / 2**20:.0f} MB")
    for info in entries:
        if info.file_size > 1 << 20 and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise ArchiveError(f"{info.filename!r} expands {info.file_size / max(info.compress_size, 1):.0f} "
                               f"times (limit {limits.max_ratio:.0f}): refused as a zip bomb")


def _entry_reason(info: zipfile.ZipInfo, limits: ArchiveLimits) -> str | None:
    mode = info.external_attr >> 16
    if info.is_dir():
        return "a folder"
    if stat.S_ISLNK(mode):
        return "a link: not followed"
    if info.flag_bits & 0x1:
        return "encrypted"
    if info.file_size == 0:
        return "empty file (0 bytes)"
    if info.file_size > limits.max_file_bytes:
        return f"{info.file_size / 2**20:.0f} MB: over the {limits.max_file_bytes / 2**20:.0f} MB limit per image"
    return None


def _read_bounded(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: ArchiveLimits) -> bytes:
    """The entry's bytes, counted while decompressing (headers may lie): ArchiveError past the
    declared size, the per-file limit or the ratio limit."""
    cap = min(limits.max_file_bytes, int(limits.max_ratio * max(info.compress_size, 1)) + (1 << 20))
    out = io.BytesIO()
    with archive.open(info) as stream:
        while chunk := stream.read(CHUNK):
            out.write(chunk)
            if out.tell() > cap:
                raise ArchiveError(f"{info.filename!r} unpacks past its limits: refused as a zip bomb")
    return out.getvalue()


def _extract_one(archive, info, rel: str, target: Path, limits: ArchiveLimits, result: ArchiveResult,
                 seen: dict[str, str]) -> str | None:
    """Write one image entry under `target`; the reason when it is skipped instead."""
    try:
        data = _read_bounded(archive, info, limits)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        return f"damaged entry ({exc})"
    if not data:
        return "empty file (0 bytes)"
    try:
        with Image.open(io.BytesIO(data)) as pil:
            pil.verify()
    except Exception:                                        # PIL raises many kinds for bad data
        return "not a readable image"
    digest = hashlib.sha1(data).hexdigest()
    if digest in seen:
        return f"a duplicate of {seen[digest]}"
    name = _free_name(rel, target, result)
    path = (target / name).resolve()
    if target not in path.parents:                           # belt and braces: never outside the target
        return "unsafe path: not extracted"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "xb") as handle:
            handle.write(data)
    except OSError as exc:                                   # e.g. "a.jpg/b.jpg" after a file "a.jpg"
        return f"cannot be written there ({exc.strerror or exc})"
    seen[digest] = name
    result.extracted.append(name)
    if name != rel:
        result.renamed.append((info.filename, name))
    return None


def _free_name(rel: str, target: Path, result: ArchiveResult) -> str:
    """`rel`, or "stem-N.ext" when that name (case-insensitively) is taken."""
    taken = {n.lower() for n in result.extracted}
    if rel.lower() not in taken and not (target / rel).exists():
        return rel
    stem, suffix = rel.rsplit(".", 1)
    n = 2
    while f"{stem}-{n}.{suffix}".lower() in taken or (target / f"{stem}-{n}.{suffix}").exists():
        n += 1
    return f"{stem}-{n}.{suffix}"
