"""core.gallery.index: the index chosen per size and budget, tuned to a recall target, both metrics."""
import numpy as np
import pytest

from core.gallery.gallery import Gallery, ObjectRecord
from core.gallery.index import IndexSettings, IndexSpec, choose_index, exact_scores, ivf_nlist, pq_m, rerank, sweep_params


def clustered(n, d=32, clusters=20, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(0, clusters, n)] + 0.7 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("n, kind", [(0, "flat"), (5_000, "flat"), (19_999, "flat"), (20_000, "hnsw"),
                                     (99_999, "hnsw"), (100_000, "ivf"), (400_000, "ivf"),
                                     (1_000_000, "ivfsq"), (1_800_000, "ivfsq"), (2_000_000, "ivfpq"), (100_000_000, "ivfpq")])
def test_documented_choice_per_size(n, kind):
    spec = choose_index(n, 512)
    assert spec.kind == kind, spec.reason
    assert spec.rerank == (kind in ("ivfsq", "ivfpq"))
    if kind == "ivfpq":
        assert spec.factory == f"IVF{ivf_nlist(n)},PQ{pq_m(512)}x4fs" and spec.memory_bytes < 1024e6 or n > 10**7


def test_budget_and_forcing():
    assert choose_index(50_000, 512, IndexSettings(memory_budget_mb=50)).kind == "ivfsq"  # HNSW/IVF do not fit
    assert choose_index(50_000, 512, IndexSettings(memory_budget_mb=20)).kind == "ivfpq"  # nor 8-bit codes
    assert choose_index(1_000_000, 512, IndexSettings(memory_budget_mb=4096)).kind == "ivf"
    assert choose_index(10, 512, IndexSettings(kind="hnsw")).kind == "hnsw"
    assert choose_index(10**7, 512, IndexSettings(opq=True)).factory.startswith("OPQ128,IVF")
    with pytest.raises(ValueError, match="unknown index kind"):
        IndexSettings(kind="lsh")
    with pytest.raises(ValueError, match="recall_target"):
        IndexSettings(recall_target=1.5)


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "ivfsq", "ivfpq"])
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_tuned_index_reaches_recall_and_survives_save(tmp_path, kind, metric):
    x = clustered(4000)
    g = Gallery(32, "crop", metric)
    g.add(x, [ObjectRecord(f"{i}.jpg", (0, 0, 1, 1), "crop") for i in range(len(x))])
    exact = [[h.id for h in hits] for hits in g.search(x[:50], 10)]
    spec = g.reindex(IndexSettings(kind=kind, tune_queries=100))
    assert spec.kind == kind and spec.tuning["reached"] and spec.tuning["recall_at_k"] >= 0.95
    assert spec.params and spec.tuning["sweep"][-1]["recall_at_k"] == spec.tuning["recall_at_k"]
    approx = [[h.id for h in hits] for hits in g.search(x[:50], 10)]
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx, exact)]) >= 0.9
    g.save(tmp_path / "g")
    loaded = Gallery.load(tmp_path / "g")
    assert loaded.spec.params == spec.params and loaded.spec.kind == kind
    assert [[h.id for h in hits] for hits in loaded.search(x[:50], 10)] == approx


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_rerank_matches_a_plain_loop(metric):
    rng = np.random.default_rng(3)
    x, q = clustered(500, seed=1), clustered(70, seed=2)
    cand = np.stack([rng.permutation(500)[:40] for _ in range(70)])  # distinct ids, as faiss returns
    cand[::7, 25:] = -1           # short shortlists
    cand[5, :] = -1               # no candidates at all
    scores, ids = rerank(q, cand, x, 10, metric)
    for row in range(70):
        c = cand[row][cand[row] >= 0]
        if not len(c):
            assert (ids[row] == -1).all()
            continue
        s = exact_scores(q[row:row + 1], x[c], metric)[0]
        best = np.argsort(-s if metric == "cosine" else s, kind="stable")[:10]
        assert set(ids[row][:len(best)]) == set(c[best])
        np.testing.assert_allclose(np.sort(scores[row][:len(best)]), np.sort(s[best]), rtol=1e-5, atol=1e-5)


def test_sweep_stops_at_target_and_skips_saturated_shortlists():
    spec = IndexSpec("ivfpq", "IVF64,PQ8x4fs", rerank=True)
    # recall saturates at 0.9 with factor 10, reaches 0.96 with factor 20 at nprobe 4
    table = {10: {1: 0.8, 2: 0.9, 4: 0.9, 8: 0.9}, 20: {1: 0.85, 2: 0.93, 4: 0.96}}
    sweep = sweep_params(spec, 64, lambda p: table[p["rerank_factor"]].get(p["nprobe"], 0.9), 0.95)  # PQ: 10, 20, ..
    assert [(r["rerank_factor"], r["nprobe"]) for r in sweep] == [(10, 1), (10, 2), (10, 4), (10, 8),
                                                                  (20, 1), (20, 2), (20, 4)]
    assert max(r["nprobe"] for r in sweep_params(IndexSpec("ivf", "IVF4,Flat"), 4, lambda p: 0.5, 0.95)) == 4
