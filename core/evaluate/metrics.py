"""Retrieval metrics over ranked relevance: precision@K, recall@K, average precision, PR curves.

Every function takes a *ranked relevance* array: ``relevant[q, r]`` is True when the item at
rank ``r`` (0-based, best first) of the ranking for query ``q`` is relevant to ``q``. A 1-D
array is one query. Rankings shorter than K (fewer items retrieved) are allowed: the missing
slots count as non-relevant.

``n_relevant[q]`` is the number of relevant items that exist for query ``q`` in the whole
collection (not only in the ranking); it is what recall divides by. When it is omitted it is
taken as the number of relevant items in the ranking, which is right when the ranking covers
the whole collection (as in the object-retrieval evaluation, where every other object is ranked).

A query with no relevant item at all has an undefined recall and average precision; those
functions return NaN for it, and the ``mean_*`` helpers average over the queries where the value
is defined (``defined_queries`` says how many).

Notation used in the docstrings, for one query: ``rel_i`` in {0, 1} is the relevance at rank
``i`` (1-based), ``R`` the number of relevant items in the collection, ``K`` the cut-off.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "ranked_relevance",
    "precision_at_k",
    "recall_at_k",
    "average_precision",
    "precision_recall_curve",
    "interpolated_pr_curve",
    "mean_defined",
    "RetrievalScores",
    "retrieval_scores",
    "chance_precision_at_k",
]


def _as_2d_bool(relevant) -> tuple[np.ndarray, bool]:
    """Return ``relevant`` as a (Q, N) bool array and whether the input was 1-D."""
    rel = np.asarray(relevant)
    if rel.ndim == 1:
        return rel.astype(bool)[None, :], True
    if rel.ndim != 2:
        raise ValueError(f"relevant must be 1-D (one ranking) or 2-D (queries x ranks), got shape {rel.shape}")
    return rel.astype(bool), False


def _n_relevant(rel: np.ndarray, n_relevant) -> np.ndarray:
    """(Q,) float count of relevant items per query; defaults to the relevant items in the ranking."""
    if n_relevant is None:
        return rel.sum(axis=1).astype(np.float64)
    n = np.atleast_1d(np.asarray(n_relevant, dtype=np.float64))
    if n.shape != (rel.shape[0],):
        raise ValueError(f"n_relevant must have one entry per query ({rel.shape[0]}), got shape {n.shape}")
    found = rel.sum(axis=1)
    if np.any(n < found):
        bad = int(np.argmax(n < found))
        raise ValueError(
            f"query {bad}: n_relevant={n[bad]:g} is smaller than the {found[bad]} relevant items in its ranking"
        )
    return n


def _check_k(k: int) -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _squeeze(values: np.ndarray, was_1d: bool):
    return float(values[0]) if was_1d else values


def ranked_relevance(query_labels, ranked_labels, ranked_ids=None) -> np.ndarray:
    """Relevance matrix of a retrieval run where a hit is an item with the query's label.

    query_labels: (Q,) labels (any comparable dtype) of the queries.
    ranked_labels: (Q, N) labels of the retrieved items, best first.
    ranked_ids: optional (Q, N) int ids of the retrieved items; ids < 0 (faiss' "no neighbour")
        are never relevant.
    Returns (Q, N) bool: ``ranked_labels[q, r] == query_labels[q]`` (and ``ranked_ids[q, r] >= 0``).
    """
    q = np.asarray(query_labels)
    lab = np.asarray(ranked_labels)
    if lab.ndim != 2 or q.shape != (lab.shape[0],):
        raise ValueError(f"expected query_labels (Q,) and ranked_labels (Q, N), got {q.shape} and {lab.shape}")
    rel = lab == q[:, None]
    if ranked_ids is not None:
        ids = np.asarray(ranked_ids)
        if ids.shape != lab.shape:
            raise ValueError(f"ranked_ids shape {ids.shape} differs from ranked_labels shape {lab.shape}")
        rel &= ids >= 0
    return rel


def precision_at_k(relevant, k: int):
    """Precision@K = (1/K) * sum_{i=1..K} rel_i: the fraction of the top K slots holding a relevant item.

    Always divides by K, so a ranking shorter than K is penalised for its empty slots.
    Defined for every query (0 when nothing relevant exists). Returns a float for a 1-D input,
    else (Q,) float64.
    """
    k = _check_k(k)
    rel, was_1d = _as_2d_bool(relevant)
    return _squeeze(rel[:, :k].sum(axis=1) / k, was_1d)


def recall_at_k(relevant, k: int, n_relevant=None):
    """Recall@K = (1/R) * sum_{i=1..K} rel_i: relevant items retrieved in the top K over all relevant items.

    This is the object-retrieval paper's definition (relevant retrieved in the top K divided by
    all relevant objects for that query), so it is below 1 whenever R > K. NaN where R = 0.
    Returns a float for a 1-D input, else (Q,) float64.
    """
    k = _check_k(k)
    rel, was_1d = _as_2d_bool(relevant)
    n = _n_relevant(rel, n_relevant)
    hits = rel[:, :k].sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(n > 0, hits / np.where(n > 0, n, 1), np.nan)
    return _squeeze(out, was_1d)


def average_precision(relevant, n_relevant=None):
    """AP = (1/R) * sum_i Precision@i * rel_i over the whole ranking (uninterpolated).

    Relevant items missing from the ranking contribute precision 0 (they are in R but never
    reached). NaN where R = 0. Returns a float for a 1-D input, else (Q,) float64.
    """
    rel, was_1d = _as_2d_bool(relevant)
    n = _n_relevant(rel, n_relevant)
    ranks = np.arange(1, rel.shape[1] + 1, dtype=np.float64)
    precision_at_each = np.cumsum(rel, axis=1) / ranks
    summed = (precision_at_each * rel).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(n > 0, summed / np.where(n > 0, n, 1), np.nan)
    return _squeeze(out, was_1d)


def precision_recall_curve(relevant, n_relevant=None) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall after each rank: P_i = (1/i) sum_{j<=i} rel_j, Rc_i = (1/R) sum_{j<=i} rel_j.

    Returns (precision, recall), each (N,) for a 1-D input or (Q, N) float64; recall is NaN
    for queries with R = 0.
    """
    rel, was_1d = _as_2d_bool(relevant)
    n = _n_relevant(rel, n_relevant)
    hits = np.cumsum(rel, axis=1).astype(np.float64)
    precision = hits / np.arange(1, rel.shape[1] + 1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(n[:, None] > 0, hits / np.where(n > 0, n, 1)[:, None], np.nan)
    if was_1d:
        return precision[0], recall[0]
    return precision, recall


def interpolated_pr_curve(relevant, n_relevant=None, levels: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """Mean interpolated precision at ``levels`` evenly spaced recall levels in [0, 1].

    For one query, p_interp(r) = max{ P_i : Rc_i >= r } (0 when recall r is never reached); the
    curve is the mean of p_interp over the queries with R > 0 (the usual way to average PR curves
    across queries, as in PASCAL VOC / COCO). Returns (recall_levels (L,), precision (L,)) float64;
    precision is NaN everywhere when no query has a relevant item.
    """
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    rel, _ = _as_2d_bool(relevant)
    precision, recall = precision_recall_curve(rel, n_relevant)
    recall_levels = np.linspace(0.0, 1.0, levels)
    defined = ~np.isnan(recall[:, 0]) if rel.shape[1] else np.zeros(rel.shape[0], bool)
    if not defined.any():
        return recall_levels, np.full(levels, np.nan)
    # Suffix maximum of precision: best precision at this rank or any later (higher-recall) rank.
    best_after = np.maximum.accumulate(precision[defined][:, ::-1], axis=1)[:, ::-1]
    rec = recall[defined]
    curves = np.zeros((rec.shape[0], levels))
    for q in range(rec.shape[0]):
        # first rank whose recall reaches each level (recall is non-decreasing along the ranking)
        first = np.searchsorted(rec[q], recall_levels - 1e-12, side="left")
        ok = first < rec.shape[1]
        curves[q, ok] = best_after[q, first[ok]]
    return recall_levels, curves.mean(axis=0)


def mean_defined(values) -> tuple[float, int]:
    """Mean of the non-NaN entries of ``values`` and how many there were (NaN, 0 when none)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    ok = ~np.isnan(v)
    if not ok.any():
        return float("nan"), 0
    return float(v[ok].mean()), int(ok.sum())


def chance_precision_at_k(n_relevant, n_candidates) -> float:
    """Expected Precision@K of a uniformly random ranking: mean over queries of R_q / N_q.

    (For a random permutation each slot is relevant with probability R/N, whatever K <= N.)
    n_relevant, n_candidates: (Q,) counts per query; queries with N_q = 0 are skipped.
    """
    r = np.asarray(n_relevant, dtype=np.float64)
    n = np.asarray(n_candidates, dtype=np.float64)
    ok = n > 0
    return float((r[ok] / n[ok]).mean()) if ok.any() else float("nan")


@dataclass
class RetrievalScores:
    """Metrics of one retrieval run, averaged over queries.

    precision_at_k, recall_at_k, mean_ap: floats (NaN when no query qualifies);
    k: the cut-off; n_queries: all queries; defined_queries: queries with at least one relevant
    item (all three averages are taken over these, so they describe the same queries);
    per_query_ap / per_query_precision / per_query_recall: (Q,) float64 (NaN where undefined).
    """

    k: int
    precision_at_k: float
    recall_at_k: float
    mean_ap: float
    n_queries: int
    defined_queries: int
    per_query_precision: np.ndarray
    per_query_recall: np.ndarray
    per_query_ap: np.ndarray

    def summary(self) -> dict:
        """JSON-friendly dict of the averaged numbers."""
        return {
            "k": self.k,
            "precision_at_k": self.precision_at_k,
            "recall_at_k": self.recall_at_k,
            "mAP": self.mean_ap,
            "n_queries": self.n_queries,
            "queries_with_relevant": self.defined_queries,
        }


def retrieval_scores(relevant, k: int, n_relevant=None) -> RetrievalScores:
    """P@K, R@K and mAP (mean of per-query AP) of a (Q, N) ranked relevance matrix.

    mAP = (1/|Q'|) * sum_{q in Q'} AP_q, where Q' are the queries with R_q > 0; P@K and R@K are
    averaged over Q' too (a query with nothing to find says nothing about the ranking).
    """
    rel, _ = _as_2d_bool(relevant)
    p = np.asarray(precision_at_k(rel, k), dtype=np.float64)
    r = np.asarray(recall_at_k(rel, k, n_relevant), dtype=np.float64)
    ap = np.asarray(average_precision(rel, n_relevant), dtype=np.float64)
    r_mean, defined = mean_defined(r)
    p_mean, _ = mean_defined(np.where(np.isnan(r), np.nan, p))
    ap_mean, _ = mean_defined(ap)
    return RetrievalScores(
        k=int(k), precision_at_k=p_mean, recall_at_k=r_mean, mean_ap=ap_mean,
        n_queries=int(rel.shape[0]), defined_queries=defined,
        per_query_precision=p, per_query_recall=r, per_query_ap=ap,
    )
