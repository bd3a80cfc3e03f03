"""Find all and label everything: what they cost once an image's candidates are known.

    python -m core.bench.find [--sam vit_t] [--points-per-side 16] [--image PATH] [--repeats 5]

Untrained weights (the timings do not depend on the values), the trained path's grid.
Prints one JSON object: the CPU and load, the image's analysis (SAM's automatic masks +
the candidates' CLIP features, paid once), then medians over `--repeats` of find-all (a
phrase), more-like-this, and labelling with COCO-panoptic's 133 categories (its text
features computed on the first call, then cached), and how many SAM automatic-mask passes
all of that took (1: labelling a new image costs no second SAM pass).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


from core.bench.timing import cpu_info, machine_load, median_seconds
from core.engine import Engine, EngineSettings
from core.find.instances import example_feature, find_all, find_like
from core.find.labels import label_candidates
from core.find.run import label_result
from core.find.vocab import coco_panoptic
from core.io.images import load_image
from core.refer.ground import GroundingSettings
from core.sam.automask import AutoMaskSettings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "coffee.jpg"


def bench_find(sam: str = "vit_t", points_per_side: int = 16, image_path: Path = EXAMPLE, repeats: int = 5) -> dict:
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
    clip = engine.embedder
    vocab = coco_panoptic()
    start = time.perf_counter()
    label_candidates(engine.grounding_candidates(image, settings), clip, vocab)
    out["label_first_ms (vocabulary text features computed)"] = round((time.perf_counter() - start) * 1000, 1)
    ms = lambda fn: round(1000 * median_seconds(fn, repeats), 1)  # noqa: E731
    out["find_all_ms"] = ms(lambda: find_all(engine.grounding_candidates(image, settings), clip, "all the cups"))
    example = example_feature(clip, image, candidates.masks[0], settings)
    out["find_like_ms (example feature given)"] = ms(lambda: find_like(engine.grounding_candidates(image, settings),
                                                                      example))
    out["example_feature_ms"] = ms(lambda: example_feature(clip, image, candidates.masks[0], settings))
    out["label_ms (semantic + instances + panoptic)"] = ms(
        lambda: label_result(label_candidates(engine.grounding_candidates(image, settings), clip, vocab)))
    out["sam_automatic_mask_passes"] = len(passes)
    out["load_after"] = machine_load()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sam", default="vit_t")
    parser.add_argument("--points-per-side", type=int, default=16)
    parser.add_argument("--image", type=Path, default=EXAMPLE)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(json.dumps(bench_find(args.sam, args.points_per_side, args.image, args.repeats), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
