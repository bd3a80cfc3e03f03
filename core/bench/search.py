"""Gallery-scale benchmarks: the index a gallery chooses by size, and ingestion throughput.

    python -m core bench-gallery index --sizes 100000 1000000 [--data clustered|coco]
    python -m core bench-gallery ingest --images N [--workers 0 2] [--ray 1 2]
    python -m core bench-gallery resume --kills 5

`index`: for each size, a `Gallery` over 512-d unit vectors gets the index
`core.gallery.index.choose_index` picks (default IndexSettings: 1 GB budget, recall@10 >= 0.95),
built from chunks and tuned on held-out gallery vectors; measured: build seconds, index
file bytes, median single-query latency through `Gallery.search` (re-ranking included),
recall@10 against exact search on separate queries. Vectors: "clustered" (1000 Gaussian
clusters on the sphere, core.bench.run) or "coco" (untrained-CLIP embeddings of COCO128
ground-truth objects, each repeated with small noise up to the size: real object structure,
synthetic count). `ingest`: images/s and objects/s of `core.gallery.ingest.ingest` over COCO128
(ground-truth masks, untrained CLIP) in-process, with worker processes and on a local Ray.
`resume`: SIGKILL an ingestion at random moments, resume, compare with an uninterrupted
build (duplicated / lost objects). JSON on stdout.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from core.bench.fakes import fake_models
from core.bench.run import cluster_centres, synthetic_vectors
from core.gallery.ray_runner import ray_available, ray_runner
from core.embed import Embedder
from core.engine import Engine, EngineSettings
from core.gallery.gallery import Gallery, ObjectRecord
from core.gallery.index import IndexSettings, exact_neighbours, recall
from core.gallery.ingest import IngestSettings, coco_tasks, ingest
from core.models import load_clip

DIM = 512
COCO = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "coco128"


def coco_object_vectors(coco_dir: Path, limit: int = 128) -> np.ndarray:
    """Untrained-CLIP (crop view) embeddings of COCO128's ground-truth objects, (M, 512)."""
    import types

    out = Path(tempfile.mkdtemp())
    models = types.SimpleNamespace(segmenter=None, embedder=Embedder(load_clip("ViT-B-32", untrained=True, device="cpu")))
    ingest(out / "g", coco_tasks(coco_dir / "instances.json", coco_dir / "images", limit=limit), models,
           IngestSettings(oracle_masks=True, checkpoint_images=64), source="coco", warn=lambda m: None)
    vectors = np.array(Gallery.load(out / "g").embeddings)
    shutil.rmtree(out, ignore_errors=True)
    return vectors


#: Above this many vectors the benchmark writes them to a memory-mapped file (10M x 512
#: float32 = 20 GB: more than the memory of these machines), as a real gallery stores them.
IN_MEMORY_MAX = 2_000_000


def make_vectors(n: int, data: str, base: np.ndarray | None, seed: int, folder: Path | None = None,
                 chunk: int = 200_000) -> np.ndarray:
    """(n, 512) float32 unit vectors of `data` ("clustered" | "coco": `base` rows plus small
    noise), generated in chunks; in memory, or a memory-mapped .npy under `folder` when
    n > IN_MEMORY_MAX."""
    if folder is not None and n > IN_MEMORY_MAX:
        out = np.lib.format.open_memmap(folder / f"vectors-{data}-{n}-{seed}.npy", "w+", np.float32, (n, DIM))
    else:
        out = np.empty((n, DIM), np.float32)
    centres = cluster_centres(1000, seed=0) if data == "clustered" else None
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        out[start:start + m] = vector_chunk(m, data, base, centres, seed * 1000 + start // chunk)
    if isinstance(out, np.memmap):
        out.flush()
    return out


def vector_chunk(m: int, data: str, base: np.ndarray | None, centres: np.ndarray | None, seed: int) -> np.ndarray:
    """(m, 512) unit vectors: clustered (1000 Gaussian clusters) or COCO objects with noise."""
    if data == "clustered":
        return synthetic_vectors(m, centres=centres, spread=1.0, seed=seed)
    rng = np.random.default_rng(seed)
    x = base[rng.integers(0, len(base), m)] + rng.normal(scale=0.2 / np.sqrt(DIM), size=(m, DIM)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def bench_index(n: int, data: str, metric: str, base=None, settings: IndexSettings | None = None,
                n_queries: int = 200, repeats: int = 100) -> dict:
    """One gallery of n vectors: chosen index, build, memory, latency, recall@10."""
    folder = Path(tempfile.mkdtemp(prefix="bench_index_", dir=os.environ.get("SAMCLIP_BENCH_DIR")))
    x = make_vectors(n, data, base, seed=1, folder=folder)
    queries = make_vectors(n_queries, data, base, seed=2)
    g = Gallery(DIM, "crop", metric)
    g._vectors = [x]
    g.records._added = _LazyRecords(n)  # search needs records only for the hits
    t0 = time.perf_counter()
    spec = g.reindex(settings or IndexSettings())
    build_s = time.perf_counter() - t0
    truth = exact_neighbours(queries, x, 10, metric)
    found = np.array([[h.id for h in hits] + [-1] * (10 - len(hits)) for hits in g.search(queries, 10)])
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        g.search(queries[i % n_queries], 10)
        times.append(time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as tmp:
        import faiss

        faiss.write_index(g.index, f"{tmp}/i.faiss")
        index_bytes = os.path.getsize(f"{tmp}/i.faiss")
    result = {"n": n, "data": data, "metric": metric, "kind": spec.kind, "factory": spec.factory, "params": spec.params,
            "tuned_recall_at_10": spec.tuning.get("recall_at_k"), "build_s": build_s,
            "index_mb": index_bytes / 1e6, "single_query_ms": 1e3 * statistics.median(times),
            "recall_at_10": recall(found, truth), "load_avg": os.getloadavg()[0],
            "embeddings": "memory-mapped file" if isinstance(x, np.memmap) else "in memory",
            "coco_objects": None if base is None else len(base), "sweep": spec.tuning.get("sweep")}
    del g, x
    shutil.rmtree(folder, ignore_errors=True)
    return result


class _LazyRecords(list):
    """n identical placeholder records without materialising them."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return ObjectRecord("synthetic", (0, 0, 1, 1), "crop", object_id=str(i))


def bench_ingest(images: int, workers: list[int], ray_workers: list[int]) -> list[dict]:
    """images/s and objects/s of ingestion per configuration (untrained CLIP, GT masks)."""
    es = EngineSettings(sam="vit_tiny", untrained=True, device="cpu")
    engine = Engine(es)
    tasks = coco_tasks(COCO / "instances.json", COCO / "images", limit=images)
    rows = []
    configs = [("in-process" if w == 0 else f"{w} worker processes", {"workers": w}, None) for w in workers]
    if ray_workers and not ray_available():
        configs += [(f"ray, {r} worker(s)", {}, ray_runner(es, workers=r, num_cpus=2)) for r in ray_workers]
    for name, extra, runner in configs:
        out = Path(tempfile.mkdtemp())
        rep = ingest(out / "g", tasks, engine, IngestSettings(oracle_masks=True, **extra), source="coco",
                     runner=runner, warn=lambda m: None)
        rows.append({"config": name, "images": rep.images_new, "objects": rep.objects_added, "seconds": rep.seconds,
                     "images_per_s": rep.images_per_s, "objects_per_s": rep.objects_per_s,
                     "load_avg": os.getloadavg()[0]})
        print(json.dumps(rows[-1]), file=sys.stderr)
        shutil.rmtree(out, ignore_errors=True)
    return rows


RESUME_RUN = """
import sys
sys.path.insert(0, {repo!r})
from core.gallery.ingest import IngestSettings, coco_tasks, ingest
from core.bench.fakes import fake_models
tasks = coco_tasks({coco!r} + "/instances.json", {coco!r} + "/images", limit={limit})
ingest({out!r}, tasks, fake_models(delay=0.05), IngestSettings(oracle_masks=True, checkpoint_images=1),
       source="coco", append=True)
"""


def bench_resume(kills: int, limit: int = 40, seed: int = 0) -> dict:
    """Kill an ingestion `kills` times at random moments, then let it finish; count
    duplicated and lost objects against an uninterrupted build."""
    repo = Path(__file__).resolve().parents[2]

    tmp = Path(tempfile.mkdtemp())
    tasks = coco_tasks(COCO / "instances.json", COCO / "images", limit=limit)
    ingest(tmp / "ref", tasks, fake_models(), IngestSettings(oracle_masks=True), source="coco")
    script = RESUME_RUN.format(repo=str(repo), coco=str(COCO), out=str(tmp / "g"),
                               limit=limit)
    rng = random.Random(seed)
    moments = []
    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL)
        moments.append(rng.uniform(2.0, 6.0))
        time.sleep(moments[-1])
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    subprocess.run([sys.executable, "-c", script], check=True, stderr=subprocess.DEVNULL)
    ref, got = Gallery.load(tmp / "ref"), Gallery.load(tmp / "g")
    key = lambda r: (r.image_key, r.object_id)  # noqa: E731
    want, have = [key(r) for r in ref.records], [key(r) for r in got.records]
    result = {"kills": kills, "kill_after_s": moments, "objects_expected": len(want), "objects": len(have),
              "duplicated": len(have) - len(set(have)), "lost": len(set(want) - set(have)),
              "identical": list(ref.records) == list(got.records)}
    shutil.rmtree(tmp, ignore_errors=True)
    return result
