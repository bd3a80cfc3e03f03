"""core.index: the index chosen per size and budget, tuned to a recall target, both metrics."""
import numpy as np
import pytest

from core.gallery import Gallery, ObjectRecord
from core.index import IndexSettings, choose_index, ivf_nlist, pq_m


def clustered(n, d=32, clusters=20, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(0, clusters, n)] + 0.7 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("n, kind", [(0, "flat"), (5_000, "flat"), (19_999, "flat"), (20_000, "hnsw"),
                                     (99_999, "hnsw"), (100_000, "ivf"), (400_000, "ivf"),
                                     (1_000_000, "ivfpq"), (100_000_000, "ivfpq")])
def test_documented_choice_per_size(n, kind):
    spec = choose_index(n, 512)
    assert spec.kind == kind, spec.reason
    assert spec.rerank == (kind == "ivfpq")
    if kind == "ivfpq":
        assert spec.factory == f"IVF{ivf_nlist(n)},PQ{pq_m(512)}x4fs" and spec.memory_bytes < 1024e6 or n > 10**7


def test_budget_and_forcing():
    assert choose_index(50_000, 512, IndexSettings(memory_budget_mb=50)).kind == "ivfpq"  # HNSW/IVF do not fit
    assert choose_index(1_000_000, 512, IndexSettings(memory_budget_mb=4096)).kind == "ivf"
    assert choose_index(10, 512, IndexSettings(kind="hnsw")).kind == "hnsw"
    assert choose_index(10**6, 512, IndexSettings(opq=True)).factory.startswith("OPQ128,IVF")
    with pytest.raises(ValueError, match="unknown index kind"):
        IndexSettings(kind="lsh")
    with pytest.raises(ValueError, match="recall_target"):
        IndexSettings(recall_target=1.5)


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "ivfpq"])
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
