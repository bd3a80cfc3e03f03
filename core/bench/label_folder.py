"""The folder job's throughput: images per minute of `python -m core label FOLDER`, in this
process and with Ray workers on a local cluster.

    python -m core.bench.label_folder --images ../shared/data/coco128/images --count 20 \\
        [--sam vit_t] [--points-per-side 16] [--ray-workers 2] [--vocab "cat, dog"] [--find dogs]

Untrained weights (the cost does not depend on the values), the trained path's grid (16x16)
unless told otherwise. The first image of each run is a warm-up (model loading, text
features) and is not counted. Prints one JSON object: CPU, load, and per runner the
images, seconds and images per minute.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from core.bench.timing import cpu_info, machine_load
from core.dataset.folder import label_folder, list_images, local_runner
from core.dataset.propose import LabelJob
from core.dataset.ray_label import ray_label_runner
from core.engine import Engine, EngineSettings
from core.gallery.ray_runner import ray_available
from core.sam.automask import AutoMaskSettings


def _subset(source: Path, count: int, target: Path) -> Path:
    """The first `count` images of `source` (+ 1 warm-up) copied into `target`."""
    target.mkdir(parents=True)
    for name in list_images(source)[:count + 1]:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, target / name)
    return target


def _timed(folder: Path, out: Path, job: LabelJob, runner) -> dict:
    """Seconds for every image after the first (whose time includes the warm-up)."""
    stamps: list[float] = []
    label_folder(folder, out, job, runner, progress=lambda done, total, name: stamps.append(time.perf_counter()))
    counted = len(stamps) - 2                                  # stamps: start, then one per image
    seconds = stamps[-1] - stamps[1]
    return {"images": counted, "seconds": round(seconds, 2),
            "images_per_minute": round(60 * counted / seconds, 2) if seconds > 0 else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--sam", default="vit_t")
    parser.add_argument("--points-per-side", type=int, default=16)
    parser.add_argument("--vocab", default="coco-panoptic")
    parser.add_argument("--find", default="dogs")
    parser.add_argument("--ray-workers", type=int, default=0, help="also run on a local Ray with N workers")
    args = parser.parse_args(argv)
    settings = EngineSettings(sam=args.sam, untrained=True, device="cpu")
    job = LabelJob(phrase=args.find or None, vocabulary=args.vocab or None,
                   automask=AutoMaskSettings(points_per_side=args.points_per_side, pred_iou_thresh=0.0,
                                             stability_score_thresh=0.0))
    report = {"cpu": cpu_info().describe(), "load_before": machine_load(), "sam": args.sam,
              "points_per_side": args.points_per_side, "find": args.find, "vocab": args.vocab}
    with tempfile.TemporaryDirectory() as tmp:
        folder = _subset(args.images, args.count, Path(tmp) / "images")
        report["local"] = _timed(folder, Path(tmp) / "local", job, local_runner(Engine(settings), folder, job))
        if args.ray_workers:
            if reason := ray_available():
                raise SystemExit(reason)
            runner = ray_label_runner(settings, folder, job, workers=args.ray_workers)
            report[f"ray_{args.ray_workers}_workers"] = _timed(folder, Path(tmp) / "ray", job, runner)
    report["load_after"] = machine_load()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
