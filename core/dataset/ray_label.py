"""The folder job on Ray Data (as `index --ray`, core/gallery/ray_runner.py, does for galleries):

    ray.data.from_items(file names)
      -> map_batches(LabelActor, concurrency=workers)   each actor loads the models once and
                                                         labels its images (read, analyse, propose)
      -> the driver streams the records into core.dataset.folder's work folder

so resuming, failures and the exports are the local path's. Workers read the image files
themselves (on a cluster the folder must be visible to every node).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np

from core.dataset.folder import label_file
from core.dataset.propose import LabelJob
from core.engine import Engine, EngineSettings
from core.gallery.ray_runner import init_ray, limit_torch_threads


class LabelActor:
    """Ray actor: the job's records for a batch of file names (models loaded once per actor)."""

    def __init__(self, engine_settings: EngineSettings, folder: str, job: LabelJob, threads: int = 1):
        limit_torch_threads(threads)
        self.engine, self.folder, self.job = Engine(engine_settings), Path(folder), job

    def __call__(self, batch: dict) -> dict:
        # JSON text: Ray Data would turn the records' nested lists into arrays
        return {"record": np.array([json.dumps(label_file(self.engine, self.folder, str(name), self.job))
                                    for name in batch["file"]], dtype=object)}


def ray_label_runner(engine_settings: EngineSettings, folder: Path, job: LabelJob, *, address: str | None = None,
                     workers: int = 1, num_cpus: int | None = None, images_per_batch: int = 1):
    """A `core.dataset.folder.Runner` that labels the pending images on Ray with `workers` actors."""

    def run(files: list[str]) -> Iterator[dict]:
        if not files:
            return
        ray = init_ray(address, num_cpus)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        resources = ray.cluster_resources()
        actor_cpus = min(1.0, 0.8 * resources.get("CPU", 1) / workers)   # one stage: the actors get it all
        gpus = resources.get("GPU", 0)
        ds = ray.data.from_items([{"file": f} for f in files], override_num_blocks=max(1, min(len(files), 4 * workers)))
        ds = ds.map_batches(LabelActor, batch_size=images_per_batch, batch_format="numpy", concurrency=workers,
                            num_cpus=actor_cpus, num_gpus=(1 if gpus >= workers else 0),
                            fn_constructor_kwargs={"engine_settings": engine_settings, "folder": str(folder),
                                                   "job": job, "threads": max(1, int(actor_cpus))})
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            yield from (json.loads(str(text)) for text in batch["record"])

    return run
