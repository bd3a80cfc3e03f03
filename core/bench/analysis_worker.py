"""One checkout's per-image analysis, stage by stage (run as a script inside any checkout).

`PYTHONPATH=DIR python -P core/bench/analysis_worker.py --checkout DIR --image IMG --repeats N --out OUT.npz`
imports `core` from DIR (-P: not from the script's own folder) (so the same timer measures the baseline and this code), loads vit_t and
ViT-B-32 with seeded untrained weights, encodes the image once (not timed: the analysis starts
from a cached embedding) and runs `core.analysis.grounding_candidates` N times with a fresh
analysis cache: SAM's automatic masks on a 16 x 16 grid (thresholds 0, at most 64 masks) and
the candidates' local and global CLIP features.

Stages are timed by wrapping the functions each checkout has (a name one checkout lacks is
simply not timed there); times are exclusive (a stage's nested stages are not counted in it),
and "other" is the rest of the total. OUT.npz holds the last run's masks and features, and a
JSON string of the timings, the peak RSS and the CPU.
"""
from __future__ import annotations

import argparse
import functools
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch

from core import analysis, embed
from core.engine import Engine, EngineSettings
from core.io.images import load_image
from core.refer import ground
from core.refer.ground import GroundingSettings
from core.sam import automask
from core.sam.automask import AutoMaskSettings

MODULES = {"core.sam.automask": automask, "core.refer.ground": ground, "core.embed": embed}

#: (module, attribute, stage). "Class.method" wraps a method. Absent names are skipped.
STAGES = (
    ("core.sam.automask", "decode_point_batch", "SAM decoder batches"),
    ("core.sam.automask", "upsample_logits", "upscale masks"),
    ("core.sam.automask", "upscale_masks", "upscale masks"),
    ("core.sam.automask", "stability_scores", "stability scores"),
    ("core.sam.automask", "masks_to_boxes", "boxes"),
    ("core.sam.automask", "box_nms", "NMS"),
    ("core.sam.automask", "_unpack", "unpack / copies"),
    ("core.sam.automask", "_clean_small_regions", "small-region clean-up"),
    ("core.sam.automask", "_best_first", "sort / copies"),
    ("core.sam.automask", "_filter_batch", "filter, pack (rest)"),
    ("core.refer.ground", "filter_candidates", "candidate filter"),
    ("core.refer.ground", "local_view", "crop rendering"),
    ("core.refer.ground", "local_views", "crop rendering"),
    ("core.refer.ground", "masks_to_boxes", "boxes"),
    ("core.embed", "Embedder.resize_to_input", "crop rendering"),
    ("core.embed", "Embedder.squashed_pixels", "CLIP pixels"),
    ("core.embed", "Embedder._encode_images", "CLIP local pass"),
    ("core.embed", "Embedder.token_masked_features", "CLIP global pass"),
    ("core.embed", "mask_to_token_grid", "token grids"),
    ("core.refer.ground", "token_grids", "token grids"),
)


class StageTimer:
    """Exclusive wall time per stage name (nested stages are subtracted from their callers)."""

    def __init__(self):
        self.totals: dict[str, float] = {}
        self._stack: list[list] = []

    def wrap(self, fn, stage: str):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            frame = [stage, 0.0]
            self._stack.append(frame)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - t0
                self._stack.pop()
                self.totals[stage] = self.totals.get(stage, 0.0) + elapsed - frame[1]
                if self._stack:
                    self._stack[-1][1] += elapsed
        return timed

    def install(self) -> list[str]:
        installed = []
        for module_name, attr, stage in STAGES:
            module = MODULES[module_name]
            owner, name = module, attr
            if "." in attr:
                owner, name = getattr(module, attr.split(".")[0], None), attr.split(".")[1]
            if owner is None or not hasattr(owner, name):
                continue
            setattr(owner, name, self.wrap(getattr(owner, name), stage))
            installed.append(f"{module_name}.{attr}")
        return installed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkout", type=Path, required=True)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--points-per-side", type=int, default=16)
    args = parser.parse_args(argv)
    if Path(analysis.__file__).resolve().parents[1] != args.checkout.resolve():
        raise SystemExit(f"core comes from {analysis.__file__}, not {args.checkout}: run with PYTHONPATH={args.checkout} -P")
    engine = Engine(EngineSettings(sam="vit_t", untrained=True, device="cpu")).load()
    image = load_image(args.image)
    settings = GroundingSettings(automask=AutoMaskSettings(
        points_per_side=args.points_per_side, pred_iou_thresh=0.0, stability_score_thresh=0.0, max_masks=64))
    segmenter = engine.segmenter_for("vit_t")
    segmenter.set_image(image)   # the analysis starts from a cached embedding
    timer = StageTimer()
    installed = timer.install()
    runs = []
    for _ in range(args.repeats):
        timer.totals = {}
        cache = analysis.AnalysisCache(1 << 34)
        t0 = time.perf_counter()
        result = analysis.grounding_candidates(cache, "vit_t", segmenter, engine.embedder, image, settings)
        total = time.perf_counter() - t0
        stages = dict(timer.totals)
        stages["other"] = total - sum(stages.values())
        runs.append({"total_s": total, "stages_s": stages})
    cand = result.candidates
    info = {"checkout": str(args.checkout), "runs": runs, "installed": installed,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "torch_threads": torch.get_num_threads(), "n_auto": len(result.auto),
            "image_hw": list(image.shape[:2])}
    np.savez_compressed(args.out, masks=np.packbits(cand.masks, axis=-1), hw=np.array(cand.masks.shape),
                        local=cand.local, global_=cand.global_, auto_masks=np.packbits(result.auto.masks, axis=-1),
                        auto_scores=result.auto.scores, info=json.dumps(info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
