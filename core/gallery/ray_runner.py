"""Ingestion on a Ray cluster (or a local Ray), with Ray Data. Optional: `pip install "ray[data]"`.

    ray.data.from_items(tasks)
      -> map_batches(read_batch)                 tasks: read file, content key, decode
      -> map_batches(SegmentActor, concurrency)  actor pool: SAM automatic masks or COCO box
                                                 prompts (one GPU per actor when the cluster
                                                 has GPUs), then the object views
      -> map_batches(EmbedActor, concurrency)    actor pool: CLIP, batched across images
      -> the driver streams the per-image results into core.gallery.ingest's checkpoint segments
         and publishes one merged gallery (same canonical order, same index choice)

So the Ray path shares everything after "results" with the single-machine path:
checkpoints, resume after a kill, skipping known images, the final merge. Workers read
the image files themselves: on a cluster the paths must be visible to every node (shared
or network file system); each actor loads the models once from `EngineSettings` (weights
in the nodes' caches). The `core` package travels to the workers through Ray's
`runtime_env` (py_modules), so the same call runs on a local Ray or a cluster address.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from core.engine import Engine, EngineSettings
from core.gallery.ingest import (ImageResult, ImageTask, IngestSettings, Prepared, embed_results, find_objects, image_result,
                         prepare)

CORE_DIR = Path(__file__).resolve().parents[1]


def ray_available() -> str | None:
    """None when Ray Data can be imported, else the reason (for messages and test skips)."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as exc:
        return f"Ray is not installed ({exc}); pip install \"ray[data]==2.60.*\""
    return None


def init_ray(address: str | None = None, num_cpus: int | None = None):
    """Connect to the Ray cluster at `address` ("auto" = the running one), or start a
    local one with `num_cpus` CPUs when address is None or "local"."""
    import ray

    runtime_env = {"py_modules": [str(CORE_DIR)],
                   "env_vars": {"SAMCLIP_OFFLINE": os.environ.get("SAMCLIP_OFFLINE", "0")}}
    if ray.is_initialized():
        return ray
    if address in (None, "", "local"):
        ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env,
                 log_to_driver=False, configure_logging=False)
    else:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    return ray


def read_batch(batch: dict, view: str, oracle: bool, known: frozenset) -> dict:
    """Ray stage: `prepare` (read, key, decode) each task of a batch; one payload per image."""
    out = []
    for text in batch["task"]:
        task = ImageTask(**json.loads(str(text)))
        task.coco_hw = None if task.coco_hw is None else tuple(task.coco_hw)
        prepared = prepare(task, view, oracle, known)
        out.append(prepared)
    return {"prepared": _objects(out)}


class SegmentActor:
    """Ray actor: SAM objects and their views for each prepared image (models loaded once)."""

    def __init__(self, engine_settings: EngineSettings, settings: IngestSettings, threads: int = 1):
        limit_torch_threads(threads)
        self.engine, self.settings = Engine(engine_settings), settings

    def __call__(self, batch: dict) -> dict:
        out = []
        for prepared in batch["prepared"]:
            prepared: Prepared
            if prepared.skipped:
                out.append(None)
            elif prepared.error is not None:
                out.append(image_result(prepared, None, self.settings.view))
            else:
                seg = None if prepared.objects is not None else self.engine.segmenter
                objects = find_objects(prepared, seg, self.settings)
                out.append(image_result(prepared, objects, self.settings.view, prepared.crops,
                                        self.settings.thumbnails))
        return {"result": _objects(out)}


class EmbedActor:
    """Ray actor: CLIP embeddings of every object of a batch of images, batched together."""

    def __init__(self, engine_settings: EngineSettings, settings: IngestSettings, threads: int = 1):
        limit_torch_threads(threads)
        self.engine, self.settings = Engine(engine_settings), settings

    def __call__(self, batch: dict) -> dict:
        results = [r for r in batch["result"] if r is not None]
        if results:
            embed_results(results, self.engine.embedder, self.settings.clip_batch)
        return {"result": batch["result"]}


def limit_torch_threads(threads: int) -> None:
    """Give an actor's torch `threads` intra-op threads (its share of the node's cores)."""
    import torch

    torch.set_num_threads(max(1, int(threads)))


def cpu_shares(cluster_cpus: float, workers: int) -> tuple[float, float]:
    """(CPUs per actor, CPUs per read task) so that 2 * workers actors and one read task
    always fit the cluster together: Ray starts a fixed-size actor pool at once, and a read
    task that cannot be scheduled beside it would stall the pipeline (seen with 2 workers
    on 2 CPUs when each actor asked for 0.5 CPU and each read task for 0.25)."""
    actor = min(1.0, 0.8 * cluster_cpus / (2 * workers))
    read = min(0.25, 0.15 * cluster_cpus)
    return actor, read


def _objects(items: list) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr


def ray_runner(engine_settings: EngineSettings, *, address: str | None = None, workers: int = 1,
               num_cpus: int | None = None, images_per_batch: int = 4):
    """A `runner` for core.gallery.ingest.ingest that computes the results on Ray with `workers`
    segment actors and `workers` embed actors (GPUs used when the cluster has them)."""

    def run(tasks: Sequence[ImageTask], known: set, settings: IngestSettings, dim: int) -> Iterator[ImageResult | None]:
        ray = init_ray(address, num_cpus)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.execution_options.verbose_progress = False
        resources = ray.cluster_resources()
        gpus = resources.get("GPU", 0)
        actor_cpus, read_cpus = cpu_shares(resources.get("CPU", 1), workers)
        per_actor_gpu = 1 if gpus >= 2 * workers else (0.5 if gpus else 0)
        ds = ray.data.from_items([{"task": json.dumps(asdict(t))} for t in tasks],
                                 override_num_blocks=max(1, min(len(tasks), 4 * workers)))
        frozen = frozenset(known)
        ds = ds.map_batches(read_batch, batch_size=images_per_batch, batch_format="numpy",
                            fn_kwargs={"view": settings.view, "oracle": settings.oracle_masks, "known": frozen},
                            num_cpus=read_cpus)
        actor = {"batch_size": images_per_batch, "batch_format": "numpy", "concurrency": workers,
                 "num_cpus": actor_cpus, "num_gpus": per_actor_gpu,
                 "fn_constructor_kwargs": {"engine_settings": engine_settings, "settings": settings,
                                           "threads": int(actor_cpus)}}
        ds = ds.map_batches(SegmentActor, **actor)
        ds = ds.map_batches(EmbedActor, **actor)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for result in batch["result"]:
                yield result

    return run
