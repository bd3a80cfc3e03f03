"""Suggestion latency after the mask is ready (issue 29's target: <= 150 ms on 2 vCPUs).

    python -m core.bench.suggest [--repeats 20] [--named 500] [--trained]

Times `Suggester.suggest_for` (one view render, one CLIP image pass, one faiss search over the
named objects, the merge with CLIP's text probabilities over COCO-panoptic's 133 classes; the
class prompts' text features are cached after the first call, as in a session). Prints JSON
with the median and p95 in ms, the CPU and torch's thread count.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from core.annotate.suggest import Suggester
from core.bench.timing import cpu_info
from core.embed import Embedder
from core.find.vocab import coco_panoptic
from core.models import load_clip


def bench(embedder, repeats: int = 20, n_named: int = 500, size: int = 480) -> dict:
    """Median / p95 ms of Suggester.suggest_for on a (size, 4/3 size) image with `n_named`
    named objects (random unit features) and COCO-panoptic's class list."""
    classes = [c.name for c in coco_panoptic()]
    rng = np.random.default_rng(0)
    suggester = Suggester(embedder.dim)
    for i in range(n_named):
        suggester.name(i, rng.normal(size=embedder.dim), classes[i % len(classes)])
    image = rng.integers(0, 255, (size, size * 4 // 3, 3), dtype=np.uint8)
    mask = np.zeros(image.shape[:2], bool)
    mask[size // 4: size // 2, size // 3: size // 2] = True
    suggester.suggest_for(embedder, image, mask, classes)            # warm-up: text features cached
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        suggester.suggest_for(embedder, image, mask, classes)
        times.append(1000 * (time.perf_counter() - start))
    return {"median_ms": round(float(np.median(times)), 1), "p95_ms": round(float(np.percentile(times, 95)), 1),
            "repeats": repeats, "named": n_named, "classes": len(classes),
            "torch_threads": int(torch.get_num_threads()), "cpu": cpu_info().model}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--named", type=int, default=500, help="named objects in the index")
    parser.add_argument("--trained", action="store_true", help="real ViT-B-32 weights (default: untrained, same cost)")
    args = parser.parse_args(argv)
    embedder = Embedder(load_clip("ViT-B-32", untrained=not args.trained, device="cpu"))
    print(json.dumps(bench(embedder, args.repeats, args.named)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
