"""The object gallery: CLIP embeddings of objects in a faiss index, plus their records.

Metrics (the two the retrieval paper compared):
  * "cosine": inner product on unit vectors; score = cosine similarity, higher is better.
  * "l2": squared L2 distance, lower is better. On unit vectors d^2 = 2 - 2 cos, so both
    rank identically.

The index is exact (IndexFlatIP / IndexFlatL2) for a gallery built in memory;
`Gallery.reindex` replaces it with the index `core.gallery.index.choose_index` picks for the
gallery's size and memory budget (HNSW, IVF or compressed IVF-PQ with exact re-ranking),
with search parameters tuned to a recall target; both are saved and restored.

On disk (format 2, `core.gallery.store`): versioned directories behind an atomic CURRENT pointer,
so readers never see a half-written gallery; records in columnar files, embeddings and the
index memory-mapped on load. Every file is checked against the manifest on load, and a
damaged or mismatched file raises `GalleryCorrupt` / `GalleryMismatch` with a clear
message. Format-1 galleries (manifest.json + records-*.jsonl) still load.

Conventions: embeddings (N, D) float32 unit rows; ids int64 positions in the gallery
(0..N-1; -1 for missing neighbours); boxes XYXY (x0, y0, x1, y1) pixels, x1/y1 exclusive; image sizes
image_hw = (H, W).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from core.gallery import store
from core.gallery.index import (METRICS, IndexSettings, IndexSpec, apply_params, build_index, choose_index,
                        empty_index, search_index, tune_index)
from core.gallery.store import FORMAT_VERSION, GalleryBusy, GalleryCorrupt
from core.gallery.thumbs import THUMBS_DIR, prune_thumbnails

__all__ = ["METRICS", "FORMAT_VERSION", "Gallery", "GalleryMismatch", "GalleryCorrupt", "GalleryBusy",
           "ObjectRecord", "ImageEntry", "Hit", "make_index", "cleanup_gallery", "gallery_version"]

#: Image statuses in a gallery's image table.
IMAGE_STATUSES = ("ok", "unreadable")


class GalleryMismatch(ValueError):
    """A saved gallery made with another model, view or metric than the one asked for."""


@dataclass
class ObjectRecord:
    """One object in the gallery.

    source: image path or id; box: XYXY (x0, y0, x1, y1) pixels, x1/y1 exclusive, in that image;
    mask_rle: COCO RLE of the (H, W) mask ({"size": [H, W], "counts": str}) or None;
    view: how it was rendered; category: label if known; image_hw: (H, W) of the source
    image; object_id: e.g. the COCO annotation id; extra: small JSON-able details (e.g.
    {"sam_score": 0.97}); image_key: content hash of the source image file (None when the
    object did not come from a file).
    """

    source: str
    box: tuple[float, float, float, float]
    view: str
    mask_rle: dict | None = None
    category: str | None = None
    image_hw: tuple[int, int] | None = None
    object_id: str | None = None
    extra: dict = field(default_factory=dict)
    image_key: str | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ObjectRecord":
        """A record from its JSON form; ValueError naming any unknown or missing field."""
        if not isinstance(data, dict):
            raise ValueError(f"a record must be a JSON object, not {type(data).__name__}")
        data = dict(data)
        if "image_size" in data:  # galleries saved before the field was named for its (H, W) order
            data["image_hw"] = data.pop("image_size")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        missing = sorted({"source", "box", "view"} - set(data))
        if unknown or missing:
            raise ValueError(f"record has unknown field(s) {unknown} or lacks {missing}; "
                             f"known fields: {sorted(names)}")
        box = data["box"]
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            raise ValueError(f"record box must be 4 numbers XYXY, not {box!r}")
        data["box"] = tuple(float(v) for v in box)
        if data.get("image_hw") is not None:
            data["image_hw"] = tuple(int(v) for v in data["image_hw"])
        return cls(**data)


@dataclass
class ImageEntry:
    """One source image a gallery has seen: key = content hash of its file (blake2b, 32 hex),
    source = its path, status = "ok" | "unreadable", objects = objects it gave."""

    key: str
    source: str
    status: str = "ok"
    objects: int = 0


@dataclass
class Hit:
    """A search result: the record, its score (see module docstring), rank (0 = best), id."""

    record: ObjectRecord
    score: float
    rank: int
    id: int

    def to_json(self) -> dict:
        return {"rank": self.rank, "id": self.id, "score": self.score, **self.record.to_json()}


def make_index(metric: str, dim: int):
    """An empty exact faiss index for `metric` ("cosine" | "l2") of width `dim`."""
    return empty_index(metric, dim)


# ----------------------------------------------------------------------------- record columns

RECORD_COLUMNS = frozenset({
    "source.codes", "source.vocab.data", "source.vocab.offsets", "source.vocab.null",
    "view.codes", "view.vocab.data", "view.vocab.offsets", "view.vocab.null",
    "category.codes", "category.vocab.data", "category.vocab.offsets", "category.vocab.null",
    "image_key.codes", "image_key.vocab.data", "image_key.vocab.offsets", "image_key.vocab.null",
    "object_id.data", "object_id.offsets", "object_id.null",
    "mask_counts.data", "mask_counts.offsets", "mask_counts.null",
    "extra.data", "extra.offsets", "extra.null",
    "box", "image_hw", "mask_size"})
IMAGE_COLUMNS = frozenset({"key.data", "key.offsets", "key.null", "source.data", "source.offsets",
                           "source.null", "status.codes", "status.vocab.data", "status.vocab.offsets",
                           "status.vocab.null", "objects"})


def records_to_columns(records: Sequence[ObjectRecord]) -> dict[str, np.ndarray]:
    """Columnar arrays of `records` (see core.gallery.store for the string encodings)."""
    n = len(records)
    box = np.zeros((n, 4), np.float64)
    hw = np.full((n, 2), -1, np.int64)
    mask_size = np.full((n, 2), -1, np.int64)
    counts, extra = [], []
    for i, r in enumerate(records):
        box[i] = r.box
        if r.image_hw is not None:
            hw[i] = r.image_hw
        if r.mask_rle is not None:
            if not isinstance(r.mask_rle.get("counts"), str):
                raise ValueError("records store compressed RLE masks (str counts, see core.io.masks.mask_to_rle)")
            mask_size[i] = r.mask_rle["size"]
            counts.append(r.mask_rle["counts"])
        else:
            counts.append(None)
        extra.append(json.dumps(r.extra, sort_keys=True) if r.extra else None)
    return {**store.prefixed("source", store.pack_vocab([r.source for r in records])),
            **store.prefixed("view", store.pack_vocab([r.view for r in records])),
            **store.prefixed("category", store.pack_vocab([r.category for r in records])),
            **store.prefixed("image_key", store.pack_vocab([r.image_key for r in records])),
            **store.prefixed("object_id", store.pack_strings([r.object_id for r in records])),
            **store.prefixed("mask_counts", store.pack_strings(counts)),
            **store.prefixed("extra", store.pack_strings(extra)),
            "box": box, "image_hw": hw, "mask_size": mask_size}


def images_to_columns(images: Sequence[ImageEntry]) -> dict[str, np.ndarray]:
    """Columnar arrays of a gallery's image table."""
    return {**store.prefixed("key", store.pack_strings([e.key for e in images])),
            **store.prefixed("source", store.pack_strings([e.source for e in images])),
            **store.prefixed("status", store.pack_vocab([e.status for e in images])),
            "objects": np.array([e.objects for e in images], np.int64)}


class RecordTable(Sequence):
    """Records read from columns on access (so a million-object gallery opens instantly),
    followed by records added in memory since. Item i is an `ObjectRecord`."""

    def __init__(self, columns: dict[str, np.ndarray] | None = None):
        self._cols = columns
        self._n = 0 if columns is None else len(columns["box"])
        if columns is not None:
            self._source = store.vocab_column(columns, "source")
            self._view = store.vocab_column(columns, "view")
            self._category = store.vocab_column(columns, "category")
            self._image_key = store.vocab_column(columns, "image_key")
            self._object_id = store.string_column(columns, "object_id")
            self._counts = store.string_column(columns, "mask_counts")
            self._extra = store.string_column(columns, "extra")
        self._added: list[ObjectRecord] = []

    def __len__(self) -> int:
        return self._n + len(self._added)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"record {i} out of range (0..{len(self) - 1})")
        if i >= self._n:
            return self._added[i - self._n]
        c = self._cols
        hw = c["image_hw"][i]
        size = c["mask_size"][i]
        counts = self._counts[i]
        extra = self._extra[i]
        return ObjectRecord(
            source=self._source[i], box=tuple(float(v) for v in c["box"][i]), view=self._view[i],
            mask_rle=None if counts is None else {"size": [int(size[0]), int(size[1])], "counts": counts},
            category=self._category[i], image_hw=None if hw[0] < 0 else (int(hw[0]), int(hw[1])),
            object_id=self._object_id[i], extra=json.loads(extra) if extra else {},
            image_key=self._image_key[i])

    def __iter__(self) -> Iterator[ObjectRecord]:
        for i in range(len(self)):
            yield self[i]

    def extend(self, records: Sequence[ObjectRecord]) -> None:
        self._added.extend(records)

    def columns(self) -> dict[str, np.ndarray]:
        """All records as columns (the loaded columns reused when nothing was added)."""
        if self._cols is not None and not self._added:
            return self._cols
        return records_to_columns(list(self))


def images_from_columns(columns: dict[str, np.ndarray]) -> list[ImageEntry]:
    keys, sources = store.string_column(columns, "key"), store.string_column(columns, "source")
    status = store.vocab_column(columns, "status")
    return [ImageEntry(keys[i], sources[i], status[i], int(columns["objects"][i])) for i in range(len(keys))]


# ----------------------------------------------------------------------------- gallery


class Gallery:
    """Objects embedded with one model and one view, searchable by one metric.

    records: Sequence[ObjectRecord] (id i = records[i]); embeddings: (N, D) float32;
    images: the source images seen (content keys, for skipping them when adding more);
    spec: the `core.gallery.index.IndexSpec` of `index` (exact until `reindex`).
    """

    def __init__(self, dim: int, view: str, metric: str = "cosine", model_info: dict | None = None):
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
        if int(dim) < 1:
            raise ValueError(f"dim must be positive, not {dim}")
        self.dim, self.view, self.metric = int(dim), view, metric
        self.model_info = dict(model_info or {})
        self.index = make_index(metric, self.dim)
        self.spec = IndexSpec("flat", "Flat", reason="built in memory: exact search")
        self.records: RecordTable = RecordTable()
        self.images: list[ImageEntry] = []
        self._vectors: list[np.ndarray] = []
        self.version: str | None = None
        self.directory: Path | None = None   # where it was loaded from (thumbnails live there)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def embeddings(self) -> np.ndarray:
        """(N, D) float32 of everything added, in id order (memory-mapped after a load)."""
        if not self._vectors:
            return np.zeros((0, self.dim), np.float32)
        if len(self._vectors) > 1:
            self._vectors = [np.concatenate(self._vectors)]
        return self._vectors[0]

    def image_keys(self) -> set[str]:
        """Content keys of every source image already in the gallery."""
        return {e.key for e in self.images}

    def add(self, embeddings: np.ndarray, records: Sequence[ObjectRecord]) -> list[int]:
        """Add (N, D) float32 unit embeddings with their N records; returns the new ids.

        ValueError for a shape mismatch or a NaN / infinite value (nothing is added).
        """
        raw = np.asarray(embeddings)
        if raw.size == 0:
            vecs = np.zeros((0, self.dim), np.float32)
        else:
            if raw.ndim != 2 or raw.shape[1] != self.dim:
                raise ValueError(f"embeddings must be (N, {self.dim}), got {raw.shape}")
            vecs = np.ascontiguousarray(raw, dtype=np.float32)
        if len(vecs) != len(records):
            raise ValueError(f"{len(vecs)} embeddings but {len(records)} records")
        if not np.isfinite(vecs).all():
            raise ValueError("embeddings contain NaN or infinity")
        start = len(self.records)
        if len(vecs):
            self.index.add(vecs)
            self._vectors.append(vecs)
        self.records.extend(records)
        return list(range(start, start + len(vecs)))

    def reindex(self, settings: IndexSettings | None = None, progress=None) -> IndexSpec:
        """Replace the index by the one `choose_index` picks for this size (built from the
        embeddings, search parameters tuned); returns its spec."""
        settings = settings or IndexSettings()
        spec = choose_index(len(self), self.dim, settings)
        emb = self.embeddings
        index = build_index(emb, self.metric, spec, settings, progress=progress)
        tune_index(index, spec, emb, self.metric, settings)
        self.index, self.spec = index, spec
        return spec

    def search(self, queries: np.ndarray, k: int = 5,
               exclude: Sequence[Sequence[int]] | None = None) -> list[list[Hit]]:
        """The k nearest objects for each of (Q, D) queries (a (D,) query is one row).

        `exclude[q]` lists ids never returned for query q (e.g. the query object itself).
        Fewer than k hits come back when the gallery is smaller.
        """
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be (Q, {self.dim}), got {q.shape}")
        if not np.isfinite(q).all():
            raise ValueError("queries contain NaN or infinity")
        if k < 1:
            raise ValueError("k must be at least 1")
        if len(self) == 0:
            return [[] for _ in range(len(q))]
        extra = max((len(e) for e in exclude), default=0) if exclude else 0
        fetch = min(len(self), k + extra)
        scores, ids = search_index(self.index, self.spec, q, fetch, self.metric,
                                   self.embeddings if self.spec.rerank else None)
        results = []
        for row in range(len(q)):
            banned = set(exclude[row]) if exclude else set()
            hits = [(int(i), float(s)) for i, s in zip(ids[row], scores[row]) if i >= 0 and i not in banned]
            results.append([Hit(self.records[i], s, rank, i) for rank, (i, s) in enumerate(hits[:k])])
        return results

    # -------------------------------------------------------------- persistence

    def meta(self) -> dict:
        return {"format": FORMAT_VERSION, "dim": self.dim, "view": self.view, "metric": self.metric,
                "model": self.model_info, "count": len(self), "images": len(self.images),
                "index": {"kind": self.spec.kind, "factory": self.spec.factory}}

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the gallery to `directory` as a new version, atomically (see core.gallery.store);
        returns the directory. Leftovers of earlier saves are cleaned up."""
        directory = Path(directory)
        with store.writer_lock(directory):
            self.write_version(directory)
        return directory

    def write_version(self, directory: Path) -> str:
        """`save` without taking the writer lock (the caller holds it); returns the version."""
        import faiss

        with store.staged_version(directory) as (partial, name):
            files = {}
            np.save(partial / "embeddings.npy", np.ascontiguousarray(self.embeddings, np.float32))
            faiss.write_index(self.index, str(partial / "index.faiss"))
            for f in ("embeddings.npy", "index.faiss"):
                files[f] = (partial / f).stat().st_size
            sizes = store.save_columns(partial / "records", self.records.columns())
            files.update({f"records/{k}": v for k, v in sizes.items()})
            sizes = store.save_columns(partial / "images", images_to_columns(self.images))
            files.update({f"images/{k}": v for k, v in sizes.items()})
            manifest = {**self.meta(), "index": self.spec.to_json(), "files": files}
            (partial / "manifest.json").write_text(json.dumps(manifest, indent=1))
        self.version = name
        store.cleanup(directory)
        return name

    @classmethod
    def load(cls, directory: str | os.PathLike, *, expect_model: dict | None = None,
             expect_view: str | None = None, expect_metric: str | None = None,
             mmap: bool = True, verify: bool = True) -> "Gallery":
        """Read the current version of a saved gallery.

        FileNotFoundError when `directory` holds no gallery; GalleryMismatch when it was
        built with another model / view / metric than expected; GalleryCorrupt (a
        ValueError) naming the damaged file otherwise. `mmap` maps the embeddings, the
        records and (where faiss allows) the index instead of reading them; `verify` also
        scans the embeddings for NaN / infinity.
        """
        directory = Path(directory)
        last_error: Exception | None = None
        for _ in range(20):  # a writer may replace the version while we open it: retry
            with store.reading(directory):
                try:
                    version = store.read_pointer(directory)
                except FileNotFoundError:
                    version = None
                if version is None:
                    if (directory / "manifest.json").is_file():
                        return _load_format1(directory, expect_model, expect_view, expect_metric)
                    raise FileNotFoundError(f"{directory} is not a gallery (no {store.POINTER} or manifest.json)")
                try:
                    return _load_version(cls, directory, version, expect_model, expect_view, expect_metric,
                                         mmap, verify)
                except (GalleryCorrupt, OSError) as exc:
                    last_error = exc
            try:
                changed = store.read_pointer(directory) != version
            except (GalleryCorrupt, OSError):
                changed = False
            if not changed:
                break
        assert last_error is not None
        if isinstance(last_error, GalleryCorrupt):
            raise last_error
        raise GalleryCorrupt(f"{directory}: cannot read the gallery ({last_error})") from last_error


def gallery_version(directory: str | os.PathLike) -> str | None:
    """The version name CURRENT points at (None for format-1 or missing galleries)."""
    return store.read_pointer(Path(directory))


def cleanup_gallery(directory: str | os.PathLike) -> list[str]:
    """Remove leftovers (partial versions of killed writers, old versions no reader holds,
    thumbnails of images no version holds: see `_prune_thumbnails`)."""
    directory = Path(directory)
    with store.writer_lock(directory):
        return store.cleanup(directory) + _prune_thumbnails(directory)


def _prune_thumbnails(directory: Path) -> list[str]:
    """Remove thumbnails (core.gallery.thumbs) of images that no version on disk holds, e.g. left by
    a killed run whose work was discarded. Skipped while an `index` run is unfinished (its
    checkpoints' thumbnails belong to no version yet) or when a version cannot be read."""
    if not (directory / THUMBS_DIR).is_dir() or (directory / store.INGEST_DIR / "settings.json").exists():
        return []
    keep: set[str] = set()
    for vdir in directory.glob("v-*"):
        if not vdir.is_dir() or vdir.name.endswith(".partial"):
            continue
        try:
            keep.update(k for k in store.string_column(store.load_columns(vdir / "images"), "key").tolist() if k)
        except (ValueError, OSError, KeyError):
            return []
    return prune_thumbnails(directory, keep)


def _manifest_error(path: Path, message: str) -> GalleryCorrupt:
    return GalleryCorrupt(f"{path}: {message}; rebuild the gallery with `python -m core index`")


def _read_manifest(version_dir: Path) -> dict:
    path = version_dir / "manifest.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise _manifest_error(path, f"not valid JSON ({exc})") from None
    required = {"format": int, "dim": int, "view": str, "metric": str, "count": int, "files": dict}
    if not isinstance(meta, dict):
        raise _manifest_error(path, "not a JSON object")
    for key, kind in required.items():
        if not isinstance(meta.get(key), kind):
            raise _manifest_error(path, f"field {key!r} is missing or not {kind.__name__}")
    if meta["format"] > FORMAT_VERSION:
        raise _manifest_error(path, f"format {meta['format']} is newer than this program reads "
                                    f"({FORMAT_VERSION}); upgrade")
    if meta["metric"] not in METRICS:
        raise _manifest_error(path, f"unknown metric {meta['metric']!r}")
    if meta["dim"] < 1 or meta["count"] < 0:
        raise _manifest_error(path, "dim must be positive and count non-negative")
    return meta


def _load_version(cls, directory, version, expect_model, expect_view, expect_metric, mmap, verify):
    import faiss

    vdir = directory / version
    if not vdir.is_dir():
        raise GalleryCorrupt(f"{directory}/{store.POINTER} names version {version}, which is missing")
    meta = _read_manifest(vdir)
    _check_expectations(directory, meta, expect_model, expect_view, expect_metric)
    store.check_files(vdir, meta["files"])
    n, dim = meta["count"], meta["dim"]
    try:
        spec = IndexSpec.from_json(meta.get("index") or {})
    except (ValueError, TypeError) as exc:
        raise _manifest_error(vdir / "manifest.json", f"bad index description ({exc})") from None
    # embeddings
    path = vdir / "embeddings.npy"
    try:
        emb = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise GalleryCorrupt(f"{path} is damaged ({exc}); rebuild the gallery") from None
    if emb.dtype != np.float32 or emb.shape != (n, dim):
        raise GalleryCorrupt(f"{path} holds {emb.shape} {emb.dtype}, expected ({n}, {dim}) float32: "
                             f"the file does not belong to this gallery")
    if verify:
        for start in range(0, n, 1 << 18):
            if not np.isfinite(emb[start:start + (1 << 18)]).all():
                bad = start + int(np.flatnonzero(~np.isfinite(emb[start:start + (1 << 18)]).all(1))[0])
                raise GalleryCorrupt(f"{path}: vector {bad} contains NaN or infinity; rebuild the gallery")
    # records and images
    try:
        rec_cols = store.load_columns(vdir / "records", mmap=mmap)
        img_cols = store.load_columns(vdir / "images", mmap=mmap)
    except (ValueError, OSError) as exc:
        raise GalleryCorrupt(f"{vdir}/records: a column file is damaged ({exc})") from None
    _check_columns(vdir / "records", rec_cols, RECORD_COLUMNS, n)
    _check_columns(vdir / "images", img_cols, IMAGE_COLUMNS, None)
    # index
    ipath = vdir / "index.faiss"
    try:
        index = faiss.read_index(str(ipath), faiss.IO_FLAG_MMAP if mmap else 0)
    except RuntimeError as exc:
        raise GalleryCorrupt(f"{ipath} is damaged ({str(exc).splitlines()[0][:200]}); rebuild the gallery") from None
    if index.d != dim or index.ntotal != n:
        raise GalleryCorrupt(f"{ipath} holds {index.ntotal} vectors of width {index.d}, but the gallery has "
                             f"{n} of width {dim}: the index belongs to another gallery")
    want = faiss.METRIC_INNER_PRODUCT if meta["metric"] == "cosine" else faiss.METRIC_L2
    if index.metric_type != want:
        raise GalleryCorrupt(f"{ipath} uses another metric than the manifest's {meta['metric']}")
    apply_params(index, spec)
    gallery = cls(dim, meta["view"], meta["metric"], meta.get("model"))
    gallery.index, gallery.spec, gallery.version = index, spec, version
    gallery.directory = directory
    gallery._vectors = [emb] if n else []
    gallery.records = RecordTable(rec_cols)
    try:
        gallery.images = images_from_columns(img_cols)
    except (ValueError, UnicodeDecodeError) as exc:
        raise GalleryCorrupt(f"{vdir}/images is damaged ({exc})") from None
    return gallery


def _check_columns(path: Path, cols: dict, expected: frozenset, n: int | None) -> None:
    names = set(cols)
    if names != expected:
        unknown, missing = sorted(names - expected), sorted(expected - names)
        raise GalleryCorrupt(f"{path}: unknown column(s) {unknown}, missing {missing}; "
                             f"the gallery was written by another program version or is damaged")
    lengths = {k: len(v) for k, v in cols.items() if not k.endswith((".data", ".offsets")) and ".vocab." not in k}
    if n is None:
        n = next(iter(lengths.values()), 0)
    bad = {k: v for k, v in lengths.items() if v != n}
    if bad:
        raise GalleryCorrupt(f"{path}: columns {sorted(bad)} have {sorted(set(bad.values()))} rows, expected {n}")
    for k, v in cols.items():
        if k.endswith(".offsets"):
            data = cols[k[:-len(".offsets")] + ".data"]
            if len(v) == 0 or v[0] != 0 or v[-1] != len(data) or (len(v) > 1 and (np.diff(v) < 0).any()):
                raise GalleryCorrupt(f"{path}: string column {k[:-8]} is damaged")
        if k.endswith(".codes"):
            vocab = cols[k[:-len(".codes")] + ".vocab.offsets"]
            if len(v) and (v.max() >= len(vocab) - 1 or v.min() < -1):
                raise GalleryCorrupt(f"{path}: column {k[:-6]} refers to unknown values")


def _load_format1(directory, expect_model, expect_view, expect_metric) -> Gallery:
    """Galleries saved by format 1 (manifest.json + index-/records-/embeddings-<v> files)."""
    import faiss

    path = directory / "manifest.json"
    try:
        meta = json.loads(path.read_text())
        files = meta["files"]
        dim, view, metric = int(meta["dim"]), meta["view"], meta["metric"]
    except (ValueError, KeyError, TypeError) as exc:
        raise _manifest_error(path, f"damaged ({exc})") from None
    _check_expectations(directory, meta, expect_model, expect_view, expect_metric)
    gallery = Gallery(dim, view, metric, meta.get("model"))
    gallery.directory = directory
    try:
        gallery.index = faiss.read_index(str(directory / files["index"]))
        records = []
        with open(directory / files["records"]) as fh:
            for line_no, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        records.append(ObjectRecord.from_json(json.loads(line)))
                    except ValueError as exc:
                        raise GalleryCorrupt(f"{directory / files['records']} line {line_no}: {exc}") from None
        vectors = np.load(directory / files["embeddings"], allow_pickle=False)
    except GalleryCorrupt:
        raise
    except (RuntimeError, ValueError, OSError, KeyError) as exc:
        raise GalleryCorrupt(f"{directory}: a gallery file is damaged or missing ({exc})") from None
    gallery.records.extend(records)
    gallery._vectors = [vectors] if len(vectors) else []
    if gallery.index.ntotal != len(gallery.records) or vectors.shape != (len(records), dim) \
            or gallery.index.d != dim:
        raise GalleryCorrupt(f"{directory}: index holds {gallery.index.ntotal} vectors of width "
                             f"{gallery.index.d} but there are {len(gallery.records)} records and "
                             f"embeddings {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise GalleryCorrupt(f"{directory}: embeddings contain NaN or infinity")
    return gallery


def _check_expectations(directory, meta, expect_model, expect_view, expect_metric) -> None:
    if expect_view is not None and meta["view"] != expect_view:
        raise GalleryMismatch(f"gallery {directory} holds '{meta['view']}' views, not "
                              f"'{expect_view}': rebuild it or use --view {meta['view']}")
    if expect_metric is not None and meta["metric"] != expect_metric:
        raise GalleryMismatch(f"gallery {directory} uses the {meta['metric']} metric, not "
                              f"{expect_metric}")
    if expect_model is not None:
        saved = meta.get("model") or {}
        diff = {k: (saved.get(k), v) for k, v in expect_model.items() if saved.get(k) != v}
        if diff:
            detail = ", ".join(f"{k}: gallery has {a!r}, current model {b!r}" for k, (a, b) in diff.items())
            raise GalleryMismatch(f"gallery {directory} was built with another model ({detail}); "
                                  f"rebuild it with the current model")
