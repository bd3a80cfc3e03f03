"""core.bench.run and timing pieces at tiny sizes (the full benchmark is never run in tests)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.bench import run as B
from core.bench import sam as S
from core.bench.sam import SamBenchResult, SamSetup
from core.bench.timing import cpu_info


def test_synthetic_vectors_are_unit_and_clustered_as_documented():
    centres = B.cluster_centres(20, seed=0)
    x = B.synthetic_vectors(2000, centres=centres, spread=1.0, seed=1)
    assert x.shape == (2000, B.DIM) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    # nearest centre of each vector; within a cluster cosine ~0.5, across clusters ~0
    own = np.argmax(x @ centres.T, axis=1)
    a, b = x[own == own[0]][:50], x[own != own[0]][:50]
    within = (a @ a.T)[np.triu_indices(len(a), 1)].mean()
    across = (a @ b.T).mean()
    assert 0.4 < within < 0.6 and abs(across) < 0.05
    u = B.synthetic_vectors(500, distribution="uniform", seed=2)
    assert abs((u @ u.T)[np.triu_indices(500, 1)].mean()) < 0.01
    np.testing.assert_array_equal(B.synthetic_vectors(5, centres=centres, seed=3),
                                  B.synthetic_vectors(5, centres=centres, seed=3))
    with pytest.raises(ValueError, match="distribution"):
        B.synthetic_vectors(5, distribution="gaussian")
    with pytest.raises(ValueError, match="centres"):
        B.synthetic_vectors(5, distribution="clustered")


def test_recall_nlist_and_median_helpers():
    found = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    truth = np.array([[1, 2, 9, 10], [8, 7, 6, 5]])
    assert B.recall_at(found, truth) == pytest.approx((0.5 + 1.0) / 2)
    assert B.ivf_nlist(100_000) == 1024 and B.ivf_nlist(1_000_000) == 4096 and B.ivf_nlist(100) == 32
    calls = []
    assert B.median_seconds(lambda: calls.append(1), repeats=3, warmup=2) >= 0
    assert len(calls) == 5
    with pytest.raises(ValueError):
        B.median_seconds(lambda: None, repeats=0)


def test_faiss_exact_and_tuned_ivf_at_tiny_size():
    settings = B.BenchSettings(sizes=(3000,), approx_min_size=3000, n_queries=40, single_repeats=5,
                               n_clusters=30)
    row = B.bench_faiss_size(3000, settings)
    assert row["n"] == 3000 and row["exact_single_ms"] > 0 and row["exact_batched_ms_per_query"] > 0
    assert row["exact_single_1thread_ms"] > 0
    approx = row["approx"]
    assert approx["recall_at_10"] >= B.TARGETS["approx_recall_at_10"]
    sweep = approx["nprobe_sweep"]
    assert [s["nprobe"] for s in sweep] == [2 ** i for i in range(len(sweep))]
    assert all(s["recall_at_10"] < 0.95 for s in sweep[:-1])  # stops at the first nprobe reaching it
    assert approx["nprobe"] == sweep[-1]["nprobe"] and approx["nlist"] == B.ivf_nlist(3000)
    assert approx["memory_mb"] == pytest.approx((3000 * (512 * 4 + 8) + approx["nlist"] * 512 * 4) / 1e6)
    small = B.bench_faiss_size(500, settings)
    assert "approx" not in small  # below approx_min_size: exact only


def test_faiss_threads_restores_the_count():
    import faiss

    before = faiss.omp_get_max_threads()
    with B.faiss_threads(1):
        assert faiss.omp_get_max_threads() == 1
    assert faiss.omp_get_max_threads() == before


def test_tune_nprobe_reaches_exact_on_structureless_data():
    import faiss

    settings = B.BenchSettings(distribution="uniform", n_queries=20)
    index, _, _, nlist = B.build_ivf(1000, settings, None)
    base = np.concatenate(list(B.iter_gallery_chunks(1000, settings, None)))
    flat = faiss.IndexFlatIP(B.DIM)
    flat.add(base)
    queries = B.synthetic_vectors(20, distribution="uniform", seed=99)
    _, truth = flat.search(queries, B.RECALL_K)
    sweep = B.tune_nprobe(index, queries, truth, target=1.0)
    # uniform 512-d data has no structure: full recall needs (nearly) every list
    assert sweep[-1]["recall_at_10"] == pytest.approx(1.0)
    assert sweep[-1]["nprobe"] > nlist // 4


def test_check_targets_and_table():
    results = B.BenchResults(
        settings=B.BenchSettings.for_quick(),
        machine={"cpu_text": "Test CPU, 2 cores (AMX no, AVX512-BF16 no, AVX-512 yes, AVX2 yes)",
                 "loadavg_start": [0.5, 0.5, 0.5]},
        cache={"sam": "vit_b", "first_set_image_s": 4.0, "cache_hit_ms": 2.0, "cache_hit_new_array_ms": 2.1},
        clip={"clip": "ViT-B-32", "crops": 32, "crops_per_s": 20.0},
        memory={"sam": "vit_b", "clip": "ViT-B-32", "after_load_mb": 1500, "peak_mb": 1900, "peak_gb": 1.86},
        faiss=[{"n": 100_000, "dim": 512, "distribution": "clustered", "exact_single_ms": 16.0,
                "exact_batched_ms_per_query": 4.0,
                "approx": {"index": "IVF1024,Flat", "nprobe": 4, "single_ms": 6.0, "batched_ms_per_query": 0.5,
                           "recall_at_10": 0.97, "build_s": 10.0, "memory_mb": 210}}],
        errors={"sam": "RuntimeError: no SAM here"}, total_seconds=60.0)
    checks = {c.check: c for c in results.checks()}
    assert checks["set_image cache hit (ms)"].met
    assert not checks["CLIP crops per second"].met and checks["CLIP crops per second"].ratio == pytest.approx(0.8)
    assert checks["app peak RSS (GB)"].met
    assert not checks["approx single query at 100,000 (ms)"].met
    assert checks["approx recall@10 at 100,000"].met
    table = B.format_table(results)
    assert "IVF1024,Flat" in table and "MISSED" in table and "no SAM here" in table and "Test CPU" in table
    data = json.loads(json.dumps(results.to_json()))
    assert data["clip"]["crops_per_s"] == 20.0 and len(data["checks"]) == len(checks)


def test_cpu_info_reads_model_and_flags():
    text = "model name\t: Some Xeon\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"
    cpu = cpu_info(text)
    assert cpu.model == "Some Xeon" and cpu.amx and cpu.avx512_bf16 and cpu.avx2 and cpu.cores >= 1
    plain = cpu_info("model name : AMD EPYC\nflags : fpu avx2\n")
    assert not plain.amx and not plain.avx512_bf16 and plain.avx2
    assert "AMX no" in plain.describe() and "AMD EPYC" in plain.describe()


def test_cache_hit_and_clip_throughput_with_small_models(embedder):
    settings = B.BenchSettings(sam=("vit_tiny",), device="cpu", repeats=1, clip_crops=4)
    cache = B.bench_cache_hit(settings)
    assert 0 < cache["cache_hit_ms"] < 1e3 * cache["first_set_image_s"]
    clip = B.bench_clip(settings)
    assert clip["crops"] == 4 and clip["crops_per_s"] > 0 and clip["bf16_autocast_crops_per_s"] > 0
    crops = B.object_crops(np.zeros((100, 120, 3), np.uint8), 6)
    assert all(c.ndim == 3 and c.shape[0] >= 32 and c.shape[1] >= 32 for c in crops)


@pytest.mark.slow
def test_memory_probe_in_a_fresh_process():
    mem = B.bench_memory(B.BenchSettings(sam=("vit_tiny",), device="cpu"))
    # torch alone is a few hundred MB; untrained ViT-B-32 adds ~600 MB
    assert 300 < mem["after_load_mb"] <= mem["peak_mb"] < 8000
    own = B.process_memory_mb()
    assert 0 < own["rss"] <= own["peak"]


def test_bench_command_faiss_only(tmp_path, capsys):
    from core.cli.main import main

    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--parts", "faiss", "--sizes", "500,2500", "--approx-from", "2500",
                 "--out", str(out)]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["out"] == str(out)
    data = json.loads(out.read_text())
    assert [r["n"] for r in data["faiss"]] == [500, 2500] and "approx" in data["faiss"][1]
    assert data["settings"]["quick"] and set(data["part_seconds"]) == {"faiss"}
    assert data["settings"]["stock_everything"] is False
    assert "exact 1q ms" in captured.err and "targets:" in captured.err
    assert main(["bench", "--parts", "gpu"]) == 2
    assert "unknown bench parts" in capsys.readouterr().err
    assert main(["bench", "--sizes", "5"]) == 2


def test_sam_part_passes_model_device_and_weights_and_checks_its_targets(monkeypatch):
    """The SAM part loads what the settings name (its real run is minutes long, so a stand-in here)."""
    calls = {}

    def fake_bench_sam(setup, repeats, quick, include_stock=False, log=None):
        calls.update(setup=setup, repeats=repeats, quick=quick, include_stock=include_stock)
        return SamBenchResult(model=setup.model, device=str(setup.device), untrained=setup.untrained,
                              fast_precision="bf16", encoder_stock_fp32_s=8.0, encoder_fast_s=1.2,
                              encoder_ratio=0.15, click_fast_ms=20.0, everything_cpu16_s=9.0,
                              encoder_cosine_min=0.9995, mask_iou_min=0.98)

    monkeypatch.setattr(B.sam_bench, "bench_sam", fake_bench_sam)
    [sam] = B.bench_sam(B.BenchSettings.for_quick(sam=("vit_l",)))
    assert calls == {"setup": SamSetup("vit_l", None, True), "repeats": 2, "quick": True, "include_stock": False}
    # --trained --device cuda reaches the SAM part (it used to load untrained weights on the CPU)
    B.bench_sam(B.BenchSettings(sam=("vit_b",), stock_everything=True, trained=True, device="cuda"))
    assert calls["setup"] == SamSetup("vit_b", "cuda", False)
    assert calls["include_stock"] is True and calls["quick"] is False
    met = {c.check: c.met for c in sam.checks()}
    assert met == {"vit_l: SAM encoder, fast path (s)": True, "vit_l: SAM encoder fast / fp32 (ratio)": True,
                   "vit_l: click-to-mask, cached embedding (ms)": False,
                   "vit_l: everything mode, CPU defaults, with encoder (s)": True,
                   "vit_l: encoder cosine vs fp32, worst token": True, "vit_l: mask IoU vs fp32, worst mask": False}
    # the encoder ratio target follows the CPU: 0.18 with AMX, 0.45 without; vit_t has its own
    ratio = {t[0]: t[2] for t in S.targets_for("vit_b", amx=True)}["encoder_ratio"]
    assert ratio == 0.18 and {t[0]: t[2] for t in S.targets_for("vit_b", amx=False)}["encoder_ratio"] == 0.45
    assert {t[0]: t[2] for t in S.targets_for("vit_t")}["encoder_fast_s"] == 0.5
    results = B.BenchResults(settings=B.BenchSettings.for_quick(),
                             machine={"cpu_text": "x", "loadavg_start": [1.0]}, sam=[sam], total_seconds=1.0)
    assert len(results.checks()) == 6
    table = B.format_table(results)
    assert "encoder fp32 (stock) 8.00 s" in table and "[MISSED] vit_l: click-to-mask" in table


def test_sam_result_refuses_a_number_it_does_not_know(monkeypatch):
    monkeypatch.setattr(S, "bench_encoder", lambda *a, **k: {"encoder_warp_s": 1.0})
    with pytest.raises(KeyError, match="encoder_warp_s"):
        S.bench_sam(SamSetup("vit_tiny"), quick=True)
