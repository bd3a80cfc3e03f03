"""Find all and label everything: what they cost once an image's candidates are known.

    python -m core.bench.find [--sam vit_t] [--points-per-side 16] [--candidates 64] [--repeats 5]

Untrained weights (the timings do not depend on the values), the trained path's grid.
Prints one JSON object: the CPU and load; the image's analysis through the engine (SAM's
automatic masks + the candidates' CLIP features, paid once) and how many SAM passes the
find and label calls after it took (1: no second pass). Untrained SAM finds few distinct
masks, so the per-call timings use `--candidates` tiles of the image as candidates, with
their real CLIP features: medians over `--repeats` of find-all (a phrase), more-like-this,
and labelling with COCO-panoptic's 133 categories (its text features computed on the
first call, then cached) into semantic, instances and panoptic.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from core.bench.timing import cpu_info, machine_load, median_seconds
from core.engine import Engine, EngineSettings
from core.find.instances import example_feature, find_all, find_like
from core.find.labels import label_candidates
from core.find.run import label_result
from core.find.vocab import coco_panoptic
from core.io.images import load_image
from core.refer.ground import GroundingSettings, image_candidates
from core.sam.automask import AutoMaskSettings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "coffee.jpg"


def tiles(hw: tuple[int, int], n: int) -> np.ndarray:
    """(n, H, W) bool: the image cut into about n rectangles (a grid), as stand-in candidates."""
    side = max(1, int(np.ceil(np.sqrt(n))))
    h, w = hw
    masks = np.zeros((side * side, h, w), bool)
    for k in range(side * side):
        r, c = divmod(k, side)
        masks[k, r * h // side:(r + 1) * h // side, c * w // side:(c + 1) * w // side] = True
    return masks[:n]


def bench_find(sam: str = "vit_t", points_per_side: int = 16, image_path: Path = EXAMPLE, repeats: int = 5,
               n_candidates: int = 64) -> dict:
    """The timings of the module docstring, in milliseconds."""
    engine = Engine(EngineSettings(sam=sam, untrained=True, device="cpu")).load()
    image = load_image(image_path)
    settings = GroundingSettings(automask=AutoMaskSettings(points_per_side=points_per_side, pred_iou_thresh=0.0,
                                                           stability_score_thresh=0.0, max_masks=64))
    passes = []
    segmenter = engine.segmenter
    real = segmenter.everything
    segmenter.everything = lambda *a, **k: passes.append(1) or real(*a, **k)
    out = {"cpu": cpu_info().describe(), "load_before": machine_load(), "sam": sam, "points_per_side": points_per_side}
    start = time.perf_counter()
    candidates = engine.grounding_candidates(image, settings)
    out["analysis_ms"] = round((time.perf_counter() - start) * 1000, 1)
    out["candidates"] = len(candidates)
    clip, vocab = engine.embedder, coco_panoptic()
    start = time.perf_counter()
    label_result(label_candidates(engine.grounding_candidates(image, settings), clip, vocab))
    out["label_first_ms (133 text features computed)"] = round((time.perf_counter() - start) * 1000, 1)
    find_all(engine.grounding_candidates(image, settings), clip, "all the cups")
    out["sam_passes_for_analysis_find_and_label"] = len(passes)
    start = time.perf_counter()
    many = image_candidates(None, clip, image, settings, masks=tiles(image.shape[:2], n_candidates))
    out["tile_candidates"] = len(many)
    out["tile_features_ms"] = round((time.perf_counter() - start) * 1000, 1)
    ms = lambda fn: round(1000 * median_seconds(fn, repeats), 1)  # noqa: E731
    out["find_all_ms"] = ms(lambda: find_all(many, clip, "all the cups"))
    start = time.perf_counter()
    find_all(many, clip, "the kayaks")                    # a noun outside the vocabulary: one new prompt
    out["find_all_new_noun_ms"] = round((time.perf_counter() - start) * 1000, 1)
    example = example_feature(clip, image, many.masks[0], settings)
    out["find_like_ms (example feature given)"] = ms(lambda: find_like(many, example))
    out["example_feature_ms"] = ms(lambda: example_feature(clip, image, many.masks[0], settings))
    out["label_ms (semantic + instances + panoptic)"] = ms(lambda: label_result(label_candidates(many, clip, vocab)))
    out["load_after"] = machine_load()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sam", default="vit_t")
    parser.add_argument("--points-per-side", type=int, default=16)
    parser.add_argument("--image", type=Path, default=EXAMPLE)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--candidates", type=int, default=64)
    args = parser.parse_args(argv)
    print(json.dumps(bench_find(args.sam, args.points_per_side, args.image, args.repeats, args.candidates), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
