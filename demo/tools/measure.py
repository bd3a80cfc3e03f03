"""Time the app's callbacks without a browser: what one person waits for, step by step.

    python -m demo.tools.measure [--sam vit_tiny] [--clicks 5] [--views mask,crop]

Untrained weights (the timings do not depend on the weights' values). Prints one JSON
object: milliseconds per step (median over --clicks for the click), and the load average.
Refer and Everything on new images, before and after the shared analysis, are timed by
`demo.tools.bench_analysis`.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from core.engine import EngineSettings
from demo.callbacks import Callbacks
from demo.context import AppContext, AppSettings
from demo.state import Session


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - start) * 1000


def measure(sam: str, clicks: int, views: tuple[str, ...], example: int = 0) -> dict:
    cache = Path(tempfile.mkdtemp(prefix="samclip_measure_"))
    ctx = AppContext(EngineSettings(sam=sam, untrained=True, device="cpu"),
                     AppSettings(gallery_views=views, cache_dir=cache))
    result = {"sam": sam, "clip": "ViT-B-32 (untrained)", "loadavg_before": os.getloadavg()[0]}
    _, result["load_models_ms"] = _timed(ctx.load_models)
    _, result["build_example_gallery_ms"] = _timed(ctx.galleries)
    cb = Callbacks(ctx)
    session = Session()
    _, result["load_example_ms (SAM image embedding)"] = _timed(cb.segment.load_example, session, example)
    h, w = session.image.shape[:2]
    times, previews = [], []
    for i in range(clicks):
        point = [[w * (0.3 + 0.4 * i / max(clicks, 1)), h * 0.5, 1]]
        _, ms = _timed(cb.segment.preview, {"key": session.image_key, "points": point})
        previews.append(ms)
        _, ms = _timed(cb.segment.commit_prompts, session, {"key": session.image_key, "points": point})
        times.append(ms)
    result["preview_ms_median (canvas fast path: predict + mask data)"] = statistics.median(previews)
    result["commit_ms_median (the preview's answer reused + info; downloads follow)"] = statistics.median(times)
    _, result["compare_views_ms"] = _timed(cb.compare.compare, session)
    _, result["search_selected_object_ms"] = _timed(cb.search.search, session, "selected object", "",
                                                     views[0], "cosine", 8, True)
    _, result["search_text_ms"] = _timed(cb.search.search, session, "text", "a cat", views[0], "cosine", 8, True)
    _, result["everything_ms"] = _timed(cb.segment.everything, session)
    result["automatic_masks"] = len(session.auto.masks)
    result["loadavg_after"] = os.getloadavg()[0]
    return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in result.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sam", default="vit_tiny", help="vit_tiny | vit_b | vit_l | vit_h")
    parser.add_argument("--clicks", type=int, default=5)
    parser.add_argument("--views", default="mask,crop", help="views of the example gallery")
    args = parser.parse_args(argv)
    views = tuple(v for v in args.views.split(",") if v)
    print(json.dumps(measure(args.sam, args.clicks, views), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
