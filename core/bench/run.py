"""Speed and memory of the engine's stages, against targets (`python -m core bench [--quick]`).

Measured (medians over repeats, wall-clock seconds from `time.perf_counter`):
  * SAM: image encoder fp32 vs the fast path, click-to-mask with a cached embedding, automatic
    masks, fast-vs-stock equivalence (`core.bench.sam`);
  * `Segmenter.set_image` of an image already seen (embedding cache hit);
  * CLIP object crops embedded per second (batched);
  * faiss search over synthetic 512-d unit vectors: exact `IndexFlatIP` (single query and
    batched), and for the large sizes an IVF index whose `nprobe` is tuned to the smallest power
    of two reaching recall@10 >= 0.95 against exact search (build time and memory reported);
  * peak resident memory of a fresh process holding the app's models (SAM + CLIP) after one
    image embedding, one click and one crop embedding.

Timings do not depend on weight values, so models are built with untrained weights unless
`--trained` is given. Synthetic vectors: by default a mixture of Gaussians on the unit sphere
(`clustered`: x = normalise(c_j + s * g / sqrt(d)), 1000 random unit centres c_j, s = 1, so two
vectors of one cluster have cosine ~0.5, as objects of one category do in CLIP space), which
gives an approximate index structure to find; `uniform` (normalised Gaussian noise) is the
structure-free worst case.

The JSON (--out, default runs/bench.json) holds every measurement; the table goes to stderr,
a one-line JSON summary to stdout.
"""
from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import faiss
import numpy as np
import torch

from core.bench import sam as sam_bench
from core.bench.sam import SamBenchResult, SamSetup, TargetCheck
from core.bench.timing import cpu_info, median_seconds
from core.embed import Embedder
from core.io.images import load_image
from core.models import load_clip, load_sam
from core.sam.segmenter import Segmenter

#: Targets of the benchmark issue (2-core CPU).
TARGETS = {
    "set_image_cache_hit_ms": 50.0,
    "approx_single_query_ms": 5.0,
    "approx_recall_at_10": 0.95,
    "clip_crops_per_s": 25.0,
    "app_peak_rss_gb": 3.0,
}
DIM = 512
RECALL_K = 10


@dataclass(frozen=True)
class BenchSettings:
    """What to measure and how often.

    sizes: gallery sizes for faiss; approx_min_size: build the approximate index from this size
    up; n_queries: queries for recall and batched latency; single_repeats: single queries timed
    (median); repeats: repeats of model timings; clip_crops: crops per CLIP timing;
    distribution: "clustered" | "uniform"; n_clusters / spread: of the clustered mixture.
    """

    quick: bool = False
    sizes: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000)
    approx_min_size: int = 100_000
    n_queries: int = 200
    single_repeats: int = 50
    repeats: int = 3
    clip_crops: int = 64
    distribution: str = "clustered"
    n_clusters: int = 1000
    spread: float = 1.0
    sam: tuple[str, ...] = ("vit_t", "vit_b")
    clip: str = "ViT-B-32"
    trained: bool = False
    device: str | None = None
    seed: int = 0
    stock_everything: bool = False
    parts: tuple[str, ...] = ("sam", "cache", "clip", "faiss", "memory")

    @classmethod
    def for_quick(cls, **overrides) -> "BenchSettings":
        """--quick: galleries up to 100k, fewer queries and repeats (under 2 minutes on 2 cores)."""
        base = dict(quick=True, sizes=(1_000, 10_000, 100_000), n_queries=100, single_repeats=30,
                    repeats=2, clip_crops=32)
        return cls(**{**base, **overrides})


# ----------------------------------------------------------------------------- helpers


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux ru_maxrss is in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- synthetic data


def cluster_centres(n_clusters: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    """(n_clusters, dim) float32 random unit vectors."""
    c = np.random.default_rng(seed).standard_normal((n_clusters, dim), dtype=np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def synthetic_vectors(n: int, *, dim: int = DIM, distribution: str = "clustered", centres=None,
                      spread: float = 1.0, seed: int = 0) -> np.ndarray:
    """(n, dim) float32 unit vectors (see the module docstring for the two distributions)."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n, dim), dtype=np.float32)
    if distribution == "uniform":
        x = noise
    elif distribution == "clustered":
        if centres is None:
            raise ValueError("clustered vectors need their cluster centres")
        x = centres[rng.integers(0, len(centres), n)] + (spread / np.sqrt(dim)) * noise
    else:
        raise ValueError(f"unknown distribution {distribution!r}; choose clustered or uniform")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, dtype=np.float32)


def iter_gallery_chunks(n: int, settings: BenchSettings, centres, chunk: int = 100_000):
    """The n gallery vectors as float32 chunks, regenerated identically on every call."""
    for i, start in enumerate(range(0, n, chunk)):
        yield synthetic_vectors(min(chunk, n - start), distribution=settings.distribution, centres=centres,
                                spread=settings.spread, seed=settings.seed * 1000 + 17 + i)


# ----------------------------------------------------------------------------- faiss


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found[q] ∩ truth[q]| / |truth[q]|, for (Q, k) int id arrays."""
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found.tolist(), truth.tolist())]))


def ivf_nlist(n: int) -> int:
    """Number of IVF lists: the power of two nearest 4 * sqrt(n), between 16 and 4096."""
    return int(min(4096, max(16, 2 ** round(np.log2(4 * np.sqrt(n))))))


@contextlib.contextmanager
def faiss_threads(n: int):
    """Run the block with faiss using `n` OpenMP threads, then restore the previous count.

    One query scanned by several threads pays an OpenMP barrier per block; on a busy 2-core
    machine a descheduled thread makes that barrier slow, so single-query latency is also
    reported with one thread.
    """
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def time_single_queries(index, queries: np.ndarray, repeats: int, k: int = RECALL_K) -> float:
    """Median seconds of one-query searches over the first `repeats` queries (one warm-up)."""
    index.search(queries[:1], k)
    times = []
    for i in range(repeats):
        q = queries[i % len(queries): i % len(queries) + 1]
        t0 = time.perf_counter()
        index.search(q, k)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_batched(index, queries: np.ndarray, k: int = RECALL_K) -> tuple[float, np.ndarray]:
    """(seconds per query when all queries go in one call, the (Q, k) ids found)."""
    t0 = time.perf_counter()
    _, ids = index.search(queries, k)
    return (time.perf_counter() - t0) / len(queries), ids


def build_ivf(n: int, settings: BenchSettings, centres):
    """Train and fill an IVF-Flat inner-product index; returns (index, train_s, add_s, nlist)."""
    nlist = ivf_nlist(n)
    quantizer = faiss.IndexFlatIP(DIM)
    index = faiss.IndexIVFFlat(quantizer, DIM, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 10
    index.cp.min_points_per_centroid = 5  # quiet faiss' warning about the capped training set
    train = next(iter_gallery_chunks(n, settings, centres))[: min(n, 32 * nlist)]
    t0 = time.perf_counter()
    index.train(train)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for chunk in iter_gallery_chunks(n, settings, centres):
        index.add(chunk)
    return index, train_s, time.perf_counter() - t0, nlist


def tune_nprobe(index, queries: np.ndarray, truth: np.ndarray, target: float) -> list[dict]:
    """Recall@10 for nprobe = 1, 2, 4, ... up to nlist, stopping at the first reaching `target`."""
    sweep, nprobe = [], 1
    while True:
        index.nprobe = nprobe
        _, ids = index.search(queries, RECALL_K)
        sweep.append({"nprobe": nprobe, "recall_at_10": recall_at(ids, truth)})
        if sweep[-1]["recall_at_10"] >= target or nprobe >= index.nlist:
            return sweep
        nprobe = min(nprobe * 2, index.nlist)


def ivf_memory_bytes(index) -> int:
    """Bytes an IVF-Flat index holds: codes + 8-byte ids per vector, plus the centroids."""
    return int(index.ntotal * (index.code_size + 8) + index.nlist * index.d * 4)


def bench_faiss_size(n: int, settings: BenchSettings) -> dict:
    """Exact (and, from approx_min_size, IVF) search at gallery size n; see module docstring."""
    centres = cluster_centres(settings.n_clusters, seed=settings.seed) if settings.distribution == "clustered" else None
    queries = synthetic_vectors(settings.n_queries, distribution=settings.distribution, centres=centres,
                                spread=settings.spread, seed=settings.seed * 1000 + 1)
    row: dict = {"n": n, "dim": DIM, "distribution": settings.distribution, "n_queries": settings.n_queries}
    t0 = time.perf_counter()
    flat = faiss.IndexFlatIP(DIM)
    for chunk in iter_gallery_chunks(n, settings, centres):
        flat.add(chunk)
    row["exact_build_s"] = time.perf_counter() - t0
    row["exact_memory_mb"] = n * DIM * 4 / 1e6
    row["exact_single_ms"] = 1e3 * time_single_queries(flat, queries, settings.single_repeats)
    with faiss_threads(1):
        row["exact_single_1thread_ms"] = 1e3 * time_single_queries(flat, queries, settings.single_repeats)
    per_query, truth = time_batched(flat, queries)
    row["exact_batched_ms_per_query"] = 1e3 * per_query
    del flat
    if n >= settings.approx_min_size:
        index, train_s, add_s, nlist = build_ivf(n, settings, centres)
        sweep = tune_nprobe(index, queries, truth, TARGETS["approx_recall_at_10"])
        index.nprobe = sweep[-1]["nprobe"]
        per_query, _ = time_batched(index, queries)
        row["approx"] = {
            "index": f"IVF{nlist},Flat", "nlist": nlist, "nprobe": index.nprobe,
            "recall_at_10": sweep[-1]["recall_at_10"], "nprobe_sweep": sweep,
            "train_s": train_s, "add_s": add_s, "build_s": train_s + add_s,
            "memory_mb": ivf_memory_bytes(index) / 1e6,
            "single_ms": 1e3 * time_single_queries(index, queries, settings.single_repeats),
            "batched_ms_per_query": 1e3 * per_query,
        }
        del index
    return row


def bench_faiss(settings: BenchSettings) -> list[dict]:
    """`bench_faiss_size` for every size in settings.sizes (progress on stderr)."""
    rows = []
    for n in settings.sizes:
        _log(f"faiss: {n} vectors ({settings.distribution}), {faiss.omp_get_max_threads()} threads")
        rows.append(bench_faiss_size(n, settings))
    return rows


# ----------------------------------------------------------------------------- models


def bench_image(seed: int = 0) -> np.ndarray:
    """A 480x640 RGB test image: the first COCO128 image beside the repo, else smooth noise."""
    here = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "coco128" / "images"
    files = sorted(here.glob("*.jpg")) if here.is_dir() else []
    if files:
        return load_image(files[0])
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    return np.kron(small, np.ones((16, 16, 1), dtype=np.uint8))


def object_crops(image: np.ndarray, n: int, seed: int = 0) -> list[np.ndarray]:
    """n random boxes of `image` (32 px to half the image per side): (h, w, 3) uint8 crops."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    crops = []
    for _ in range(n):
        ch, cw = rng.integers(32, max(33, h // 2)), rng.integers(32, max(33, w // 2))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crops.append(np.ascontiguousarray(image[y:y + ch, x:x + cw]))
    return crops


def bench_cache_hit(settings: BenchSettings) -> dict:
    """`Segmenter.set_image` on a new image (miss, one call) and on the same image again (hit)."""
    seg = Segmenter(load_sam(settings.sam[0], untrained=not settings.trained, device=settings.device),
                    cache_size=4)
    image = bench_image(settings.seed)
    t0 = time.perf_counter()
    seg.set_image(image)
    miss = time.perf_counter() - t0
    hit = median_seconds(lambda: seg.set_image(image), repeats=max(5, 5 * settings.repeats), warmup=0)
    copy_hit = median_seconds(lambda: seg.set_image(image.copy()), repeats=max(5, 5 * settings.repeats), warmup=0)
    return {"sam": settings.sam[0], "image_hw": list(image.shape[:2]), "first_set_image_s": miss,
            "cache_hit_ms": 1e3 * hit, "cache_hit_new_array_ms": 1e3 * copy_hit}


def bench_clip(settings: BenchSettings) -> dict:
    """Object crops embedded per second by `Embedder.embed_images` in batches of 32."""
    embedder = Embedder(load_clip(settings.clip, untrained=not settings.trained, device=settings.device))
    crops = object_crops(bench_image(settings.seed), settings.clip_crops, settings.seed)
    embedder.embed_images(crops[:8], batch_size=8)  # warm-up
    seconds = median_seconds(lambda: embedder.embed_images(crops, batch_size=32), settings.repeats, warmup=0)
    row = {"clip": settings.clip, "crops": len(crops), "batch_size": 32, "seconds": seconds,
           "crops_per_s": len(crops) / seconds}
    if embedder.bundle.device == "cpu":
        row["bf16_autocast_crops_per_s"] = len(crops) / median_seconds(
            lambda: _embed_bf16(embedder, crops), settings.repeats, warmup=1)
    return row


def _embed_bf16(embedder, crops):
    """Informational: the same batches under CPU bfloat16 autocast (not what the engine runs)."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return embedder.embed_images(crops, batch_size=32)


_MEMORY_PROBE = """
import json, sys
import numpy as np
from core.bench.run import bench_image, object_crops, process_memory_mb
from core.engine import Engine, EngineSettings
cfg = json.loads(sys.argv[1])
engines = [Engine(EngineSettings(sam=name, clip=cfg["clip"], untrained=cfg["untrained"],
                                device=cfg["device"])).load() for name in cfg["sam"]]
loaded = process_memory_mb()
image = bench_image()
for engine in engines:
    emb = engine.segmenter.set_image(image)
    engine.segmenter.predict(emb, points=np.array([[320.0, 240.0]]), labels=np.array([1]))
engine.embedder.embed_images(object_crops(image, 32), batch_size=32)
engine.embedder.embed_texts(["a dog"])
print(json.dumps({"after_load": loaded, "after_use": process_memory_mb()}))
"""


def process_memory_mb() -> dict:
    """{"rss": current, "peak": high-water mark} resident memory of this process in MB.

    Reads VmRSS / VmHWM from /proc/self/status (Linux); elsewhere falls back to ru_maxrss for
    both. (ru_maxrss is not used on Linux because a child started by fork inherits the parent's
    high-water mark, which would charge the bench's own memory to the probe.)
    """
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        return {"rss": int(fields["VmRSS"].split()[0]) / 1024, "peak": int(fields["VmHWM"].split()[0]) / 1024}
    except (OSError, KeyError, ValueError):
        peak = peak_rss_mb() if sys.platform != "darwin" else peak_rss_mb() / 1024
        return {"rss": peak, "peak": peak}


def bench_memory(settings: BenchSettings, timeout: float = 300) -> dict:
    """Peak RSS of a fresh process that loads SAM + CLIP and runs each once (models only, no UI)."""
    cfg = {"sam": settings.sam, "clip": settings.clip, "untrained": not settings.trained,
           "device": settings.device}
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, json.dumps(cfg)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=root)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe failed: {proc.stderr.strip().splitlines()[-1:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"sam": "+".join(settings.sam), "clip": settings.clip, "after_load_mb": out["after_load"]["rss"],
            "after_use_mb": out["after_use"]["rss"], "peak_mb": out["after_use"]["peak"],
            "peak_gb": out["after_use"]["peak"] / 1024}


def bench_sam(settings: BenchSettings) -> list[SamBenchResult]:
    """The SAM measurements of `core.bench.sam` (encoder fp32 vs fast, clicks, everything mode,
    equivalence) for every model in settings.sam, side by side, on the device the settings name."""
    return [sam_bench.bench_sam(SamSetup(model=name, device=settings.device, untrained=not settings.trained),
                                repeats=settings.repeats, quick=settings.quick,
                                include_stock=settings.stock_everything, log=_log)
            for name in settings.sam]


# ----------------------------------------------------------------------------- report


@dataclass
class BenchResults:
    """One benchmark run. Each part is None until measured; a part that failed is in `errors`.

    sam: the SAM record; cache / clip / memory: small dicts of numbers (see their functions);
    faiss: one dict per gallery size; machine: CPU, threads, versions and load averages.
    """

    settings: BenchSettings
    machine: dict
    sam: list[SamBenchResult] | None = None
    cache: dict | None = None
    clip: dict | None = None
    faiss: list[dict] | None = None
    memory: dict | None = None
    errors: dict[str, str] = field(default_factory=dict)
    part_seconds: dict[str, float] = field(default_factory=dict)
    total_seconds: float = 0.0
    bench_process_peak_rss_mb: float | None = None

    def checks(self) -> list[TargetCheck]:
        """One row per target that was measured: value, target, met, value / target."""
        rows = []
        if self.cache:
            rows.append(TargetCheck.of("set_image cache hit (ms)", self.cache["cache_hit_ms"],
                                       TARGETS["set_image_cache_hit_ms"]))
        if self.clip:
            rows.append(TargetCheck.of("CLIP crops per second", self.clip["crops_per_s"],
                                       TARGETS["clip_crops_per_s"], True))
        if self.memory:
            rows.append(TargetCheck.of("app peak RSS (GB)", self.memory["peak_gb"], TARGETS["app_peak_rss_gb"]))
        for row in self.faiss or []:
            approx = row.get("approx")
            if approx:
                rows.append(TargetCheck.of(f"approx single query at {row['n']:,} (ms)", approx["single_ms"],
                                           TARGETS["approx_single_query_ms"]))
                rows.append(TargetCheck.of(f"approx recall@10 at {row['n']:,}", approx["recall_at_10"],
                                           TARGETS["approx_recall_at_10"], True))
        for result in self.sam or []:
            rows += result.checks()
        return rows

    def to_json(self) -> dict:
        """Everything, JSON-friendly (what --out holds)."""
        out = {"settings": asdict(self.settings), "targets": TARGETS, "machine": self.machine,
               "sam": None if self.sam is None else [r.to_json() for r in self.sam], "cache": self.cache, "clip": self.clip,
               "faiss": self.faiss, "memory": self.memory, "errors": self.errors,
               "part_seconds": self.part_seconds, "total_seconds": self.total_seconds,
               "bench_process_peak_rss_mb": self.bench_process_peak_rss_mb}
        out["checks"] = [asdict(c) for c in self.checks()]
        return out


def machine_info() -> dict:
    """The CPU (model, cores, AMX / AVX512-BF16 / AVX2), threads, versions and the load average now."""
    cpu = cpu_info()
    return {"cpu": asdict(cpu), "cpu_text": cpu.describe(), "cpus": os.cpu_count(), "affinity": cpu.cores,
            "torch_threads": torch.get_num_threads(), "faiss_threads": faiss.omp_get_max_threads(),
            "loadavg_start": list(os.getloadavg()), "python": sys.version.split()[0],
            "torch": torch.__version__, "faiss": faiss.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


#: The parts of a run: name -> function of the settings, and the BenchResults field it fills.
PARTS: dict[str, Callable[[BenchSettings], object]] = {
    "sam": bench_sam, "cache": bench_cache_hit, "clip": bench_clip, "faiss": bench_faiss, "memory": bench_memory}


def run_bench(settings: BenchSettings, on_part: Callable[[BenchResults], None] | None = None) -> BenchResults:
    """Every part in settings.parts; a part that fails is recorded with its error, not fatal.

    on_part(results) is called after each part (the command saves partial JSON with it, so an
    interrupted run keeps what it measured).
    """
    results = BenchResults(settings=settings, machine=machine_info())
    started = time.perf_counter()
    for name in settings.parts:
        _log(f"bench: {name} ...")
        t0 = time.perf_counter()
        try:
            setattr(results, name, PARTS[name](settings))
        except Exception as exc:  # record and go on: one broken part should not hide the others
            results.errors[name] = f"{type(exc).__name__}: {exc}"
            _log(f"bench: {name} failed: {exc}")
        _log(f"bench: {name} done in {time.perf_counter() - started:.1f} s total")
        results.part_seconds[name] = round(time.perf_counter() - t0, 2)
        if on_part is not None:
            on_part(results)
    results.total_seconds = round(time.perf_counter() - started, 2)
    results.machine["loadavg_end"] = list(os.getloadavg())
    results.bench_process_peak_rss_mb = process_memory_mb()["peak"]
    return results


def _num(v, fmt="{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def format_table(results: BenchResults) -> str:
    """A plain-text table of the headline numbers and the target checks."""
    s, m = results.settings, results.machine
    lines = [f"benchmark ({'quick' if s.quick else 'full'}; {m['cpu_text']}; "
             f"loadavg at start {m['loadavg_start'][0]:.2f}; {'trained' if s.trained else 'untrained'} weights)"]
    for sam in results.sam or []:
        lines.append(f"SAM {sam.model} ({sam.fast_precision or '?'} fast path, device {sam.device}):")
        if sam.precision_choice:
            lines.append(f"  precision auto chose {sam.precision_choice}")
        lines += [f"  {item}" for item in sam.table_lines()]
    cache = results.cache
    if cache:
        lines.append(f"set_image ({cache['sam']}): first {cache['first_set_image_s']:.2f} s, "
                     f"cache hit {cache['cache_hit_ms']:.2f} ms (new array {cache['cache_hit_new_array_ms']:.2f} ms)")
    clip = results.clip
    if clip:
        bf16 = clip.get("bf16_autocast_crops_per_s")
        lines.append(f"CLIP {clip['clip']}: {clip['crops_per_s']:.1f} crops/s ({clip['crops']} crops, batch 32)"
                     + ("" if bf16 is None else f"; under bf16 autocast (not used by the engine) {bf16:.1f} crops/s"))
    mem = results.memory
    if mem:
        lines.append(f"app models ({mem['sam']} + {mem['clip']}): {mem['after_load_mb']:.0f} MB after load, "
                     f"{mem['peak_mb']:.0f} MB peak")
    for part, error in results.errors.items():
        lines.append(f"{part}: {error}")
    faiss_rows = results.faiss
    if faiss_rows:
        lines += ["", f"faiss, {faiss_rows[0]['dim']}-d {faiss_rows[0]['distribution']} vectors, k = {RECALL_K}:",
                  f"{'n':>10} | {'exact 1q ms':>11} | {'1q 1-thread':>11} | {'exact batch ms/q':>16} | {'approx index':>14} | "
                  f"{'nprobe':>6} | {'1q ms':>6} | {'batch ms/q':>10} | {'recall@10':>9} | {'build s':>7} | {'MB':>6}"]
        for row in faiss_rows:
            a = row.get("approx") or {}
            lines.append(f"{row['n']:>10,} | {row['exact_single_ms']:>11.2f} | "
                         f"{_num(row.get('exact_single_1thread_ms')):>11} | {row['exact_batched_ms_per_query']:>16.3f}"
                         f" | {a.get('index', '-'):>14} | {a.get('nprobe', '-'):>6} | {_num(a.get('single_ms')):>6}"
                         f" | {_num(a.get('batched_ms_per_query'), '{:.3f}'):>10} | {_num(a.get('recall_at_10'), '{:.3f}'):>9}"
                         f" | {_num(a.get('build_s'), '{:.1f}'):>7} | {_num(a.get('memory_mb'), '{:.0f}'):>6}")
    checks = results.checks()
    if checks:
        lines += ["", "targets:"]
        for c in checks:
            ratio = "" if c.ratio is None else f", ratio {c.ratio:.2f}"
            lines.append(f"  [{'ok' if c.met else 'MISSED'}] {c.check}: {c.value:.3g} (target {c.target:.3g}{ratio})")
    lines.append(f"total {results.total_seconds:.1f} s")
    return "\n".join(lines)
