"""core.evaluate.metrics against values computed by hand on small rankings."""
from __future__ import annotations

import math

import numpy as np
import pytest

from core.evaluate import metrics as m

# rel = 1 0 1 0 0 1 : relevant at ranks 1, 3, 6
RANKING = np.array([1, 0, 1, 0, 0, 1], dtype=bool)


def test_precision_at_k_hand_values():
    assert m.precision_at_k(RANKING, 1) == pytest.approx(1.0)
    assert m.precision_at_k(RANKING, 3) == pytest.approx(2 / 3)
    assert m.precision_at_k(RANKING, 5) == pytest.approx(2 / 5)
    assert m.precision_at_k(RANKING, 6) == pytest.approx(3 / 6)


def test_recall_at_k_divides_by_all_relevant():
    assert m.recall_at_k(RANKING, 1) == pytest.approx(1 / 3)
    assert m.recall_at_k(RANKING, 5) == pytest.approx(2 / 3)
    # one more relevant object exists in the collection but was not ranked
    assert m.recall_at_k(RANKING, 5, n_relevant=4) == pytest.approx(2 / 4)
    assert m.recall_at_k(RANKING, 6, n_relevant=4) == pytest.approx(3 / 4)


def test_average_precision_hand_values():
    # (1/3) * (1/1 + 2/3 + 3/6)
    assert m.average_precision(RANKING) == pytest.approx((1 + 2 / 3 + 0.5) / 3)
    # an unretrieved relevant item counts with precision 0
    assert m.average_precision(RANKING, n_relevant=4) == pytest.approx((1 + 2 / 3 + 0.5) / 4)
    assert m.average_precision([1, 1, 0]) == pytest.approx(1.0)
    assert m.average_precision([0, 0, 1]) == pytest.approx(1 / 3)


def test_fewer_items_than_k():
    short = [1, 1]
    assert m.precision_at_k(short, 5) == pytest.approx(2 / 5)  # empty slots are misses
    assert m.recall_at_k(short, 5) == pytest.approx(1.0)
    assert m.recall_at_k(short, 5, n_relevant=3) == pytest.approx(2 / 3)
    empty = np.zeros(0, dtype=bool)
    assert m.precision_at_k(empty, 5) == 0.0
    assert m.recall_at_k(empty, 5, n_relevant=2) == 0.0
    assert m.average_precision(empty, n_relevant=2) == 0.0


def test_no_relevant_items_is_undefined_not_zero():
    none = [0, 0, 0]
    assert m.precision_at_k(none, 2) == 0.0
    assert math.isnan(m.recall_at_k(none, 2))
    assert math.isnan(m.average_precision(none))
    scores = m.retrieval_scores(np.array([[1, 0, 0], [0, 0, 0]], bool), k=2)
    # the second query has nothing to find: averages use the first only
    assert scores.n_queries == 2 and scores.defined_queries == 1
    assert scores.precision_at_k == pytest.approx(0.5)
    assert scores.recall_at_k == pytest.approx(1.0)
    assert scores.mean_ap == pytest.approx(1.0)
    all_none = m.retrieval_scores(np.zeros((2, 3), bool), k=2)
    assert all_none.defined_queries == 0 and math.isnan(all_none.mean_ap)


def test_batched_equals_per_query_loop():
    rng = np.random.default_rng(0)
    rel = rng.random((40, 25)) < 0.3
    n_rel = rel.sum(axis=1) + rng.integers(0, 3, size=40)
    scores = m.retrieval_scores(rel, k=5, n_relevant=n_rel)
    aps, ps, rs = [], [], []
    for q in range(40):
        if n_rel[q] == 0:
            continue
        hits, ap = 0, 0.0
        for i, r in enumerate(rel[q], start=1):
            if r:
                hits += 1
                ap += hits / i
        aps.append(ap / n_rel[q])
        ps.append(rel[q, :5].sum() / 5)
        rs.append(rel[q, :5].sum() / n_rel[q])
    assert scores.mean_ap == pytest.approx(np.mean(aps))
    assert scores.precision_at_k == pytest.approx(np.mean(ps))
    assert scores.recall_at_k == pytest.approx(np.mean(rs))
    assert scores.summary()["queries_with_relevant"] == len(aps)


def test_precision_recall_curve_and_interpolation():
    prec, rec = m.precision_recall_curve([1, 0, 1])
    np.testing.assert_allclose(prec, [1, 0.5, 2 / 3])
    np.testing.assert_allclose(rec, [0.5, 0.5, 1.0])
    levels, curve = m.interpolated_pr_curve(np.array([[1, 0, 1]], bool), levels=3)
    np.testing.assert_allclose(levels, [0, 0.5, 1])
    np.testing.assert_allclose(curve, [1, 1, 2 / 3])
    # recall 1 never reached: precision 0 there
    _, curve = m.interpolated_pr_curve(np.array([[1, 0]], bool), n_relevant=[2], levels=3)
    np.testing.assert_allclose(curve, [1, 1, 0])
    # averaged over queries with something relevant; the empty query is ignored
    _, curve = m.interpolated_pr_curve(np.array([[0, 1], [1, 0], [0, 0]], bool), levels=2)
    np.testing.assert_allclose(curve, [0.75, 0.75])
    _, curve = m.interpolated_pr_curve(np.zeros((2, 2), bool), levels=2)
    assert np.isnan(curve).all()


def test_ranked_relevance_and_missing_neighbours():
    rel = m.ranked_relevance(
        ["dog", "cat"],
        [["dog", "cat", "dog"], ["cat", "cat", "dog"]],
        ranked_ids=[[3, 1, -1], [0, 2, 5]],
    )
    np.testing.assert_array_equal(rel, [[True, False, False], [True, True, False]])


def test_chance_precision():
    assert m.chance_precision_at_k([1, 2], [4, 4]) == pytest.approx(0.375)


@pytest.mark.parametrize(
    "call",
    [
        lambda: m.precision_at_k([1, 0], 0),
        lambda: m.recall_at_k([1, 0], 2.5),
        lambda: m.average_precision([1, 1], n_relevant=1),
        lambda: m.average_precision(np.zeros((2, 2, 2))),
        lambda: m.recall_at_k(np.zeros((2, 2)), 1, n_relevant=[1]),
        lambda: m.ranked_relevance(["a"], ["a", "b"]),
    ],
)
def test_bad_input_raises_clear_error(call):
    with pytest.raises(ValueError):
        call()
