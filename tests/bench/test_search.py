"""core.bench.search: the gallery-scale index benchmark on small sizes."""
import numpy as np

import core.bench.search as search
from core.gallery.index import IndexSettings


def test_vectors_on_disk_equal_vectors_in_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(search, "IN_MEMORY_MAX", 1000)
    on_disk = search.make_vectors(5000, "clustered", None, seed=1, folder=tmp_path, chunk=1500)
    in_memory = search.make_vectors(5000, "clustered", None, seed=1, chunk=1500)
    assert isinstance(on_disk, np.memmap) and not isinstance(in_memory, np.memmap)
    np.testing.assert_array_equal(on_disk, in_memory)
    np.testing.assert_allclose(np.linalg.norm(in_memory, axis=1), 1, rtol=1e-5)


def test_bench_index_reports_the_chosen_index_and_its_recall():
    row = search.bench_index(4000, "clustered", "l2", settings=IndexSettings(kind="ivfsq", tune_queries=50),
                             n_queries=30, repeats=5)
    assert row["kind"] == "ivfsq" and row["factory"].endswith(",SQ8") and "rerank_factor" in row["params"]
    assert row["recall_at_10"] >= 0.9 and row["index_mb"] > 0 and row["single_query_ms"] > 0
    assert row["sweep"] and row["embeddings"] == "in memory"
