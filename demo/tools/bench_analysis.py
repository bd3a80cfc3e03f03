"""Refer and Everything on new images, before and after the shared per-image analysis.

    python -m demo.tools.bench_analysis [--baseline DIR] [--points-per-side 16]

In-process, untrained vit_t + CLIP ViT-B-32, the trained path's automatic-mask grid
(16 x 16 by default). Prints one JSON line per checkout: Refer on a new image (cold), a
second sentence on it, Everything after Refer, Everything cold, Refer after Everything,
and (this checkout) Refer after the Refer tab was open for 15 s. With --baseline DIR
(another checkout, e.g. `git worktree add /tmp/base <commit>`) that checkout's callbacks
are timed the same way, in the same run (this file is run with that checkout first on the
path, so the imports below are that checkout's modules).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from core.bench.timing import cpu_info
from core.engine import EngineSettings
from demo.callbacks import Callbacks
from demo.context import UNTRAINED_AUTOMASK, AppContext, AppSettings
from demo.state import Session

REPO = Path(__file__).resolve().parents[2]


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return round((time.perf_counter() - start) * 1000, 1)


def measure(name: str, points_per_side: int) -> dict:
    """The timings of the checkout whose modules are importable (its callbacks API, old or new)."""
    grid = replace(UNTRAINED_AUTOMASK, points_per_side=points_per_side)
    ctx = AppContext(EngineSettings(sam="vit_t", untrained=True, device="cpu"),
                     AppSettings(gallery_views=("crop",), cache_dir=Path(tempfile.mkdtemp()), automask=grid))
    ctx.load_models()
    cb = Callbacks(ctx)
    new = hasattr(cb, "segment")
    load = cb.segment.load_example if new else cb.load_example
    refer = cb.refer.refer if new else cb.refer
    everything = cb.segment.everything if new else cb.everything
    out = {"checkout": name, "points_per_side": points_per_side}
    a, b = Session(), Session()
    load(a, 1)
    out["refer_cold_ms"] = _timed(refer, a, "the cat on the left")
    out["refer_second_sentence_ms"] = _timed(refer, a, "the thing on the right")
    out["everything_after_refer_ms"] = _timed(everything, a)
    load(b, 0)
    out["everything_cold_ms"] = _timed(everything, b)
    out["refer_after_everything_ms"] = _timed(refer, b, "the cat on the left")
    if new:
        c = Session()
        load(c, 2)
        cb.refer.prepare(c)
        time.sleep(15)                     # the Refer tab open for 15 s before Enter
        out["refer_after_15s_prepared_ms"] = _timed(refer, c, "the cat on the left")
    out["loadavg"] = round(os.getloadavg()[0], 2)
    return out


def run_in(checkout: Path, name: str, points_per_side: int) -> str:
    """This file run against another checkout's modules (its folder first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "GRADIO_ANALYTICS_ENABLED": "False"}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one", name,
                           "--points-per-side", str(points_per_side)], cwd=checkout, env=env,
                          capture_output=True, text=True, timeout=900)
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another checkout to time the same way")
    parser.add_argument("--points-per-side", type=int, default=16)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.points_per_side)))
        return 0
    print(json.dumps({"cpu": cpu_info().describe(), "loadavg": round(os.getloadavg()[0], 2)}))
    if args.baseline:
        print(run_in(args.baseline.resolve(), "baseline", args.points_per_side))
    print(run_in(REPO, "this checkout", args.points_per_side))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
