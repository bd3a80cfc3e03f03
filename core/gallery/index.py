"""The faiss index of a gallery: chosen by size and memory budget, tuned to a recall target.

`choose_index(n, dim, settings)` picks (documented defaults of `IndexSettings`):

  * n < exact_below (20k):               "flat"   exact search (IndexFlatIP / IndexFlatL2),
                                                  1 ms per query at 10k objects of 512-d;
  * n < hnsw_below (100k), fits budget:   "hnsw"   HNSW32 graph over the full vectors;
  * vectors fit the memory budget:        "ivf"    IVF<nlist>,Flat (nlist ~ 4 sqrt(n));
  * 8-bit codes fit the budget:           "ivfsq"  IVF<nlist>,SQ8: one byte per dimension
                                                  (a quarter of the vectors), with exact
                                                  re-ranking of a short shortlist (8-bit
                                                  distances cannot order near-duplicates);
  * beyond:                               "ivfpq"  [OPQ<m>,]IVF<nlist>,PQ<m>x4fs: 4-bit
                                                  fast-scan codes of m = dim/4 sub-vectors
                                                  (dim/8 bytes) with exact re-ranking of a
                                                  shortlist read from the (memory-mapped)
                                                  embeddings.

"Fits" means the `estimate_memory` of that kind <= memory_budget_mb (512-d, 1 GB: "ivf" up
to ~480k objects, "ivfsq" up to ~1.9M). Metrics: "cosine"
(inner product on unit vectors; score higher = nearer) and "l2" (squared distance; lower =
nearer); both are built with the same structure, only faiss' metric differs.

`tune_index` sets the search parameters (nprobe, efSearch, rerank factor) to the cheapest
reaching `recall_target` recall@k against exact search, on `tune_queries` held-out gallery
vectors (each query's own id is removed from both result lists), and reports the sweep;
the gallery records the result in its manifest and applies it on load.

Shapes: embeddings (N, D) float32 C-contiguous; ids int64 with -1 for missing neighbours.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

METRICS = ("cosine", "l2")
INDEX_KINDS = ("auto", "flat", "hnsw", "ivf", "ivfsq", "ivfpq")


@dataclass(frozen=True)
class IndexSettings:
    """How a gallery's index is chosen, built and tuned.

    kind: "auto" (by size and budget, see module docstring) or force one of "flat", "hnsw",
        "ivf", "ivfsq", "ivfpq".
    exact_below: below this many objects search is exact (default 20_000).
    hnsw_below: from exact_below up to this, HNSW when it fits the budget (default 100_000).
    memory_budget_mb: memory the index may take (default 1024); above it, compressed codes.
    opq: rotate with OPQ before product quantisation ("ivfpq" only; slower to train).
    recall_target: recall@k against exact search the tuned parameters must reach (0.95).
    k: the k of that recall (10).
    tune_queries: held-out gallery vectors used to tune (200).
    train_size: at most this many vectors train IVF / PQ (default 40 per list, <= 256k).
    seed: seeds the training and tuning samples (builds are reproducible).
    """

    kind: str = "auto"
    exact_below: int = 20_000
    hnsw_below: int = 100_000
    memory_budget_mb: float = 1024.0
    opq: bool = False
    recall_target: float = 0.95
    k: int = 10
    tune_queries: int = 200
    train_size: int = 256_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"unknown index kind {self.kind!r}; choose one of {INDEX_KINDS}")
        if not 0 < self.recall_target <= 1:
            raise ValueError(f"recall_target must be in (0, 1], not {self.recall_target}")
        if self.memory_budget_mb <= 0:
            raise ValueError(f"memory_budget_mb must be positive, not {self.memory_budget_mb}")
        if self.exact_below < 0 or self.hnsw_below < 0 or self.k < 1 or self.tune_queries < 1:
            raise ValueError("exact_below, hnsw_below must be >= 0 and k, tune_queries >= 1")


@dataclass
class IndexSpec:
    """The index chosen for a gallery.

    kind: "flat" | "hnsw" | "ivf" | "ivfsq" | "ivfpq"; factory: the faiss index_factory string;
    rerank: whether search re-ranks a shortlist exactly from the embeddings;
    params: search parameters ({"nprobe": .., "efSearch": .., "rerank_factor": ..});
    memory_bytes: estimated index memory; reason: why this kind was chosen;
    tuning: the recall sweep of `tune_index` (empty for exact search).
    """

    kind: str
    factory: str
    rerank: bool = False
    params: dict = field(default_factory=dict)
    memory_bytes: int = 0
    reason: str = ""
    tuning: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "IndexSpec":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown or "kind" not in data or "factory" not in data:
            raise ValueError(f"index description has unknown keys {sorted(unknown)} or lacks kind/factory")
        return cls(**data)


def ivf_nlist(n: int) -> int:
    """IVF lists: the power of two nearest 4 * sqrt(n), between 16 and 65536 (at most n / 8)."""
    target = 4 * math.sqrt(max(n, 1))
    nlist = 2 ** round(math.log2(target))
    return int(max(16, min(65536, nlist, 2 ** int(math.log2(max(16, n // 8))))))


def pq_m(dim: int) -> int:
    """Sub-quantisers of the compressed index: dim / 4 (4-bit fast-scan: dim/8 bytes per code)."""
    m = max(1, dim // 4)
    while dim % m:
        m -= 1
    return m


def estimate_memory(kind: str, n: int, dim: int) -> int:
    """Bytes of index memory for `kind` at n vectors of width dim (codes + ids + structure)."""
    if kind == "flat":
        return n * dim * 4
    if kind == "hnsw":
        return n * (dim * 4 + 32 * 2 * 4 + 16)
    nlist = ivf_nlist(n)
    if kind == "ivf":
        return n * (dim * 4 + 8) + nlist * dim * 4
    if kind == "ivfsq":
        return n * (dim + 8) + nlist * dim * 4 + 2 * dim * 4
    if kind == "ivfpq":
        return n * (pq_m(dim) // 2 + 8) + nlist * dim * 4 + dim * dim * 4
    raise ValueError(f"unknown index kind {kind!r}")


def choose_index(n: int, dim: int, settings: IndexSettings | None = None) -> IndexSpec:
    """The index kind and faiss factory string for n objects of width dim (module docstring)."""
    s = settings or IndexSettings()
    budget = s.memory_budget_mb * 1e6
    kind, reason = s.kind, "forced"
    if kind == "auto":
        if n < s.exact_below:
            kind, reason = "flat", f"{n} < exact_below={s.exact_below}: exact search"
        elif n < s.hnsw_below and estimate_memory("hnsw", n, dim) <= budget:
            kind, reason = "hnsw", f"{n} < hnsw_below={s.hnsw_below} and HNSW fits {s.memory_budget_mb:g} MB"
        elif estimate_memory("ivf", n, dim) <= budget:
            kind, reason = "ivf", f"full vectors ({estimate_memory('ivf', n, dim) / 1e6:.0f} MB) fit the budget"
        elif estimate_memory("ivfsq", n, dim) <= budget:
            kind, reason = "ivfsq", (f"full vectors ({estimate_memory('ivf', n, dim) / 1e6:.0f} MB) exceed "
                                     f"{s.memory_budget_mb:g} MB, 8-bit codes "
                                     f"({estimate_memory('ivfsq', n, dim) / 1e6:.0f} MB) fit")
        else:
            kind, reason = "ivfpq", (f"8-bit codes ({estimate_memory('ivfsq', n, dim) / 1e6:.0f} MB) exceed "
                                     f"{s.memory_budget_mb:g} MB: 4-bit product codes, exact re-ranking")
    nlist = ivf_nlist(n)
    m = pq_m(dim)
    factory = {"flat": "Flat", "hnsw": "HNSW32,Flat", "ivf": f"IVF{nlist},Flat", "ivfsq": f"IVF{nlist},SQ8",
               "ivfpq": f"{f'OPQ{m},' if s.opq else ''}IVF{nlist},PQ{m}x4fs"}[kind]
    return IndexSpec(kind, factory, rerank=kind in ("ivfsq", "ivfpq"), memory_bytes=estimate_memory(kind, n, dim),
                     reason=reason)


def faiss_metric(metric: str):
    import faiss

    if metric == "cosine":
        return faiss.METRIC_INNER_PRODUCT
    if metric == "l2":
        return faiss.METRIC_L2
    raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")


def empty_index(metric: str, dim: int):
    """An empty exact index (IndexFlatIP for "cosine", IndexFlatL2 for "l2") of width dim."""
    import faiss

    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
    return faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)


def build_index(embeddings: np.ndarray, metric: str, spec: IndexSpec, settings: IndexSettings | None = None,
                chunk: int = 200_000, progress: Callable[[str], None] | None = None):
    """A trained faiss index of `spec` over (N, D) float32 `embeddings` (may be memory-mapped),
    added in chunks of `chunk` rows."""
    import faiss

    s = settings or IndexSettings()
    n, dim = embeddings.shape
    if spec.kind == "flat":
        index = empty_index(metric, dim)
    else:
        index = faiss.index_factory(dim, spec.factory, faiss_metric(metric))
    if spec.kind in ("ivf", "ivfsq", "ivfpq"):
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.niter = 10
        ivf.cp.seed = 1234 + s.seed
        ivf.cp.min_points_per_centroid = 5
        size = min(n, s.train_size, max(40 * ivf.nlist, 10_000))
        rows = np.sort(np.random.default_rng(s.seed).choice(n, size=size, replace=False))
        if progress:
            progress(f"training {spec.factory} on {size} vectors")
        index.train(np.ascontiguousarray(embeddings[rows], dtype=np.float32))
    if spec.kind == "hnsw":
        index.hnsw.efConstruction = 40
    for start in range(0, n, chunk):
        if progress:
            progress(f"adding {start}..{min(n, start + chunk)} of {n} to {spec.factory}")
        index.add(np.ascontiguousarray(embeddings[start:start + chunk], dtype=np.float32))
    return index


def apply_params(index, spec: IndexSpec) -> None:
    """Set spec.params (nprobe / efSearch) on a faiss index."""
    import faiss

    if "nprobe" in spec.params:
        faiss.extract_index_ivf(index).nprobe = int(spec.params["nprobe"])
    if "efSearch" in spec.params:
        faiss.downcast_index(index).hnsw.efSearch = int(spec.params["efSearch"])


def exact_scores(queries: np.ndarray, vectors: np.ndarray, metric: str) -> np.ndarray:
    """(Q, M) scores: inner products ("cosine") or squared L2 distances ("l2")."""
    ip = queries @ vectors.T
    if metric == "cosine":
        return ip
    return (queries * queries).sum(1)[:, None] + (vectors * vectors).sum(1)[None, :] - 2 * ip


def search_index(index, spec: IndexSpec, queries: np.ndarray, k: int, metric: str,
                 embeddings: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores (Q, k) float32, ids (Q, k) int64, -1 where missing) from `index`; with
    spec.rerank, a shortlist of k * rerank_factor is re-scored exactly from `embeddings`."""
    if not spec.rerank:
        if spec.kind == "hnsw":
            index_hnsw = index
            ef = max(int(spec.params.get("efSearch", 16)), k)
            import faiss

            faiss.downcast_index(index_hnsw).hnsw.efSearch = ef
        return index.search(queries, k)
    if embeddings is None:
        raise ValueError("a re-ranked index needs the embeddings")
    shortlist = min(index.ntotal, k * int(spec.params.get("rerank_factor", 10)))
    _, cand = index.search(queries, shortlist)
    return rerank(queries, cand, embeddings, k, metric)


def rerank(queries: np.ndarray, cand: np.ndarray, embeddings: np.ndarray, k: int, metric: str,
           batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Exact top k of each query among its candidate ids: queries (Q, D), cand (Q, S) int64
    (-1 = none), embeddings (N, D) (may be memory-mapped: each batch reads its distinct rows
    once, in increasing order). Returns (scores (Q, k) float32, ids (Q, k) int64, -1 missing)."""
    worst = -np.inf if metric == "cosine" else np.inf
    scores = np.full((len(queries), k), worst, np.float32)
    ids = np.full((len(queries), k), -1, np.int64)
    for start in range(0, len(queries), batch):
        q, c = queries[start:start + batch], cand[start:start + batch]
        rows, where = np.unique(c, return_inverse=True)
        if not (rows >= 0).any():
            continue
        vectors = np.asarray(embeddings[rows[rows >= 0]], np.float32)
        offset = int((rows < 0).sum())  # -1 sorts first: positions shift by one when present
        pos = where.reshape(c.shape) - offset
        s = np.einsum("qd,qsd->qs", q, vectors[np.maximum(pos, 0)]) if metric == "cosine" else \
            ((vectors[np.maximum(pos, 0)] - q[:, None, :]) ** 2).sum(-1)
        s = np.where(c >= 0, s, worst)
        order = np.argsort(-s if metric == "cosine" else s, axis=1, kind="stable")[:, :k]
        top_s, top_c = np.take_along_axis(s, order, 1), np.take_along_axis(c, order, 1)
        top_c = np.where(np.isfinite(top_s), top_c, -1)
        scores[start:start + len(q), :top_s.shape[1]] = top_s
        ids[start:start + len(q), :top_c.shape[1]] = top_c
    return scores, ids


def exact_neighbours(queries: np.ndarray, embeddings: np.ndarray, k: int, metric: str,
                     chunk: int = 200_000) -> np.ndarray:
    """(Q, k) ids of the exact k nearest rows of `embeddings`, scanned in chunks."""
    import faiss

    best_s = np.full((len(queries), 0), 0, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(embeddings), chunk):
        block = np.ascontiguousarray(embeddings[start:start + chunk], dtype=np.float32)
        s, i = faiss.knn(queries, block, min(k, len(block)), metric=faiss_metric(metric))
        best_s, best_i = np.concatenate([best_s, s], 1), np.concatenate([best_i, i + start], 1)
        order = np.argsort(-best_s if metric == "cosine" else best_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)
    return best_i


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / |truth| (ids; -1 ignored)."""
    values = []
    for f, t in zip(found.tolist(), truth.tolist()):
        t = [x for x in t if x >= 0]
        if t:
            values.append(len(set(f) & set(t)) / len(t))
    return float(np.mean(values)) if values else 1.0


def tune_index(index, spec: IndexSpec, embeddings: np.ndarray, metric: str,
               settings: IndexSettings | None = None) -> IndexSpec:
    """Set spec.params to the cheapest search parameters reaching settings.recall_target
    recall@k (module docstring); records the sweep in spec.tuning. Returns spec."""
    s = settings or IndexSettings()
    n = len(embeddings)
    if spec.kind == "flat" or n <= s.k + 1:
        spec.tuning = {"recall_at_k": 1.0, "k": s.k, "exact": True}
        return spec
    rng = np.random.default_rng(s.seed + 1)
    rows = np.sort(rng.choice(n, size=min(s.tune_queries, n), replace=False))
    queries = np.ascontiguousarray(embeddings[rows], dtype=np.float32)
    truth = _without_self(exact_neighbours(queries, embeddings, s.k + 1, metric), rows, s.k)

    def measure(params: dict) -> float:
        spec.params = params
        apply_params(index, spec)
        _, ids = search_index(index, spec, queries, s.k + 1, metric, embeddings)
        return recall(_without_self(ids, rows, s.k), truth)

    sweep = sweep_params(spec, faiss_nlist(index) if spec.kind != "hnsw" else 0, measure, s.recall_target)
    reached = [row for row in sweep if row["recall_at_k"] >= s.recall_target]
    best = reached[-1] if reached else max(sweep, key=lambda row: row["recall_at_k"])
    spec.params = {k: v for k, v in best.items() if k != "recall_at_k"}
    apply_params(index, spec)
    spec.tuning = {"recall_at_k": best["recall_at_k"], "k": s.k, "target": s.recall_target,
                   "queries": len(rows), "reached": best["recall_at_k"] >= s.recall_target, "sweep": sweep}
    return spec


#: nprobe values tried when tuning (capped at the number of lists).
PROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
#: shortlist sizes (k x factor) tried when tuning a re-ranked index, per kind.
RERANK_FACTORS = {"ivfsq": (2, 5, 10, 20), "ivfpq": (10, 20, 50, 100)}


def sweep_params(spec: IndexSpec, nlist: int, measure: Callable[[dict], float], target: float) -> list[dict]:
    """Try search parameters from cheapest up until `measure(params)` (recall) reaches
    `target`: efSearch for HNSW; nprobe (PROBES, capped at nlist) for IVF, per re-rank factor
    when re-ranking (a factor's nprobe sweep stops once two more probes gain < 0.002).
    Returns the rows tried, each params + "recall_at_k"."""
    if spec.kind == "hnsw":
        plans = [[{"efSearch": ef} for ef in (16, 32, 64, 128, 256, 512, 1024)]]
    else:
        probes = sorted({min(p, nlist) for p in PROBES})
        factors = RERANK_FACTORS[spec.kind] if spec.rerank else (None,)
        plans = [[{"nprobe": p, **({"rerank_factor": f} if f else {})} for p in probes] for f in factors]
    sweep: list[dict] = []
    for plan in plans:
        tried: list[float] = []
        for params in plan:
            tried.append(measure(params))
            sweep.append({**params, "recall_at_k": tried[-1]})
            if tried[-1] >= target:
                return sweep
            if len(tried) >= 3 and tried[-1] - tried[-3] < 0.002:
                break  # saturated: more probes do not help this shortlist
    return sweep


def faiss_nlist(index) -> int:
    import faiss

    return int(faiss.extract_index_ivf(index).nlist)


def _without_self(ids: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    out = np.full((len(ids), k), -1, np.int64)
    for q, (found, own) in enumerate(zip(ids.tolist(), rows.tolist())):
        kept = [i for i in found if i != own and i >= 0][:k]
        out[q, :len(kept)] = kept
    return out


def index_memory_bytes(index) -> int:
    """Bytes of a faiss index when serialised (a close proxy of its memory)."""
    import faiss

    return int(faiss.serialize_index(index).nbytes)
