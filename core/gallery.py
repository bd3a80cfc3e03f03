"""The object gallery: CLIP embeddings of objects in a faiss index, plus their records.

Metrics (the two the retrieval paper compared):
  * "cosine": `IndexFlatIP` on unit vectors; score = cosine similarity, higher is better.
  * "l2": `IndexFlatL2`; score = squared L2 distance, lower is better. On unit vectors
    d^2 = 2 - 2 cos, so both rank identically.

On disk a gallery is a directory with `manifest.json` naming one version of
`index-<v>.faiss`, `records-<v>.jsonl` and `embeddings-<v>.npy`. A save writes a new
version and then atomically replaces the manifest, so an interrupted save leaves the
previous gallery intact.
"""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

METRICS = ("cosine", "l2")
FORMAT_VERSION = 1


class GalleryMismatch(ValueError):
    """A saved gallery made with another model, view or metric than the one asked for."""


@dataclass
class ObjectRecord:
    """One object in the gallery.

    source: image path or id; box: XYXY pixels (x1/y1 exclusive) in that image;
    mask_rle: COCO RLE of the (H, W) mask or None; view: how it was rendered;
    category: label if known; image_hw: (height, width) of the source image; object_id: e.g.
    the COCO annotation id.
    """

    source: str
    box: tuple[float, float, float, float]
    view: str
    mask_rle: dict | None = None
    category: str | None = None
    image_hw: tuple[int, int] | None = None
    object_id: str | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ObjectRecord":
        data = dict(data)
        data["box"] = tuple(float(v) for v in data["box"])
        if "image_size" in data:  # galleries saved before the field was named for its (H, W) order
            data["image_hw"] = data.pop("image_size")
        if data.get("image_hw") is not None:
            data["image_hw"] = tuple(int(v) for v in data["image_hw"])
        return cls(**data)


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
    import faiss

    if metric == "cosine":
        return faiss.IndexFlatIP(dim)
    if metric == "l2":
        return faiss.IndexFlatL2(dim)
    raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")


class Gallery:
    """Objects embedded with one model and one view, searchable by one metric."""

    def __init__(self, dim: int, view: str, metric: str = "cosine", model_info: dict | None = None):
        self.dim, self.view, self.metric = int(dim), view, metric
        self.model_info = dict(model_info or {})
        self.index = make_index(metric, self.dim)
        self.records: list[ObjectRecord] = []
        self._vectors: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.records)

    @property
    def embeddings(self) -> np.ndarray:
        """(N, D) float32 of everything added, in id order."""
        if not self._vectors:
            return np.zeros((0, self.dim), np.float32)
        if len(self._vectors) > 1:
            self._vectors = [np.concatenate(self._vectors)]
        return self._vectors[0]

    def add(self, embeddings: np.ndarray, records: Sequence[ObjectRecord]) -> list[int]:
        """Add (N, D) float32 embeddings with their N records; returns the new ids."""
        vecs = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32).reshape(-1, self.dim)) \
            if np.asarray(embeddings).size else np.zeros((0, self.dim), np.float32)
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
        if k < 1:
            raise ValueError("k must be at least 1")
        if len(self) == 0:
            return [[] for _ in range(len(q))]
        extra = max((len(e) for e in exclude), default=0) if exclude else 0
        fetch = min(len(self), k + extra)
        scores, ids = self.index.search(q, fetch)
        results = []
        for row in range(len(q)):
            banned = set(exclude[row]) if exclude else set()
            hits = [(int(i), float(s)) for i, s in zip(ids[row], scores[row]) if i >= 0 and i not in banned]
            results.append([Hit(self.records[i], s, rank, i) for rank, (i, s) in enumerate(hits[:k])])
        return results

    # -------------------------------------------------------------- persistence

    def meta(self) -> dict:
        return {"format": FORMAT_VERSION, "dim": self.dim, "view": self.view, "metric": self.metric,
                "model": self.model_info, "count": len(self)}

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the gallery to `directory` atomically (see module docstring)."""
        import faiss

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        version = uuid.uuid4().hex[:12]
        files = {"index": f"index-{version}.faiss", "records": f"records-{version}.jsonl",
                 "embeddings": f"embeddings-{version}.npy"}
        faiss.write_index(self.index, str(directory / files["index"]))
        with open(directory / files["records"], "w") as fh:
            for rec in self.records:
                fh.write(json.dumps(rec.to_json()) + "\n")
        np.save(directory / files["embeddings"], self.embeddings)
        for name in files.values():
            _fsync(directory / name)
        old = _read_manifest(directory) if (directory / "manifest.json").is_file() else None
        manifest_tmp = directory / f"manifest-{version}.tmp"
        manifest_tmp.write_text(json.dumps({**self.meta(), "files": files}, indent=1))
        _fsync(manifest_tmp)
        os.replace(manifest_tmp, directory / "manifest.json")
        if old:
            for name in old.get("files", {}).values():
                (directory / name).unlink(missing_ok=True)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, *, expect_model: dict | None = None,
             expect_view: str | None = None, expect_metric: str | None = None) -> "Gallery":
        """Read a saved gallery; GalleryMismatch if it was built with another model/view/metric."""
        import faiss

        directory = Path(directory)
        if not (directory / "manifest.json").is_file():
            raise FileNotFoundError(f"{directory} is not a gallery (no manifest.json)")
        meta = _read_manifest(directory)
        _check_expectations(directory, meta, expect_model, expect_view, expect_metric)
        gallery = cls(meta["dim"], meta["view"], meta["metric"], meta.get("model"))
        gallery.index = faiss.read_index(str(directory / meta["files"]["index"]))
        with open(directory / meta["files"]["records"]) as fh:
            gallery.records = [ObjectRecord.from_json(json.loads(line)) for line in fh if line.strip()]
        vectors = np.load(directory / meta["files"]["embeddings"])
        gallery._vectors = [vectors] if len(vectors) else []
        if gallery.index.ntotal != len(gallery.records):
            raise ValueError(f"{directory}: index holds {gallery.index.ntotal} vectors but "
                             f"{len(gallery.records)} records")
        return gallery


def _read_manifest(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_text())


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


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
