"""The per-image analysis stage by stage, this checkout against another (`python -m core.bench.analysis`).

`python -m core.bench.analysis --baseline /work/base [--image IMG] [--rounds 1] [--points-per-side 16]`
runs `core/bench/analysis_worker.py` in fresh processes, alternating the checkouts A B B A per
round (so a load change on a shared machine hits both alike), and prints: the CPU line and the
load average, the median exclusive seconds per stage for both, the total ratio (this / baseline),
the agreement of the results (candidate count, mask areas, local / global CLIP cosines) and each
side's peak RSS (a fresh process with both models loaded, after the analysis).
Without --baseline it prints this checkout's stage table alone.

`python -m core.bench.analysis --decoder [--rounds 3]` times the automatic-mask decoder alone
(vit_t, 32 random prompts) per points_per_batch and torch thread count, alternating the settings
each round, in milliseconds per prompt (the choice of batch size and threads is per machine and
per load: see docs/performance.md).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import torch

from core.bench.timing import cpu_info, machine_load
from core.engine import Engine, EngineSettings
from core.io.images import load_image
from core.sam.automask import decode_point_batch

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("analysis_worker.py")
DEFAULT_IMAGE = REPO.parent / "shared" / "data" / "coco128" / "images" / "000000000009.jpg"


def run_worker(checkout: Path, image: Path, out: Path, points_per_side: int, repeats: int = 1) -> dict:
    """One fresh process analysing `image` with `checkout`'s code; its JSON info plus the arrays."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    subprocess.run([sys.executable, "-P", str(WORKER), "--checkout", str(checkout), "--image", str(image),
                    "--repeats", str(repeats), "--out", str(out), "--points-per-side", str(points_per_side)],
                   check=True, cwd=str(checkout), stderr=subprocess.DEVNULL, env=env)
    data = np.load(out)
    info = json.loads(str(data["info"]))
    h, w = (int(v) for v in data["hw"][1:])
    info["masks"] = np.unpackbits(data["masks"], axis=-1, count=w).astype(bool)
    info["local"], info["global_"] = data["local"], data["global_"]
    return info


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.shape != b.shape or a.size == 0:
        return np.zeros(0)
    na = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    nb = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (na * nb).sum(axis=1)


def agreement(new: dict, base: dict) -> dict:
    """Candidate counts, worst relative mask-area difference, worst local / global cosines."""
    out = {"candidates": len(new["masks"]), "baseline_candidates": len(base["masks"])}
    if out["candidates"] == out["baseline_candidates"] and out["candidates"]:
        a_new = new["masks"].reshape(len(new["masks"]), -1).sum(1).astype(float)
        a_base = base["masks"].reshape(len(base["masks"]), -1).sum(1).astype(float)
        out["max_area_diff"] = float(np.max(np.abs(a_new - a_base) / np.maximum(a_base, 1)))
        out["masks_identical"] = bool(np.array_equal(new["masks"], base["masks"]))
        out["min_local_cosine"] = float(_cosines(new["local"], base["local"]).min())
        out["min_global_cosine"] = float(_cosines(new["global_"], base["global_"]).min())
    return out


def _stage_medians(runs: list[dict]) -> dict:
    names = sorted({k for r in runs for k in r["stages_s"]})
    return {k: statistics.median(r["stages_s"].get(k, 0.0) for r in runs) for k in names}


def format_report(new_runs, base_runs, agree, new_peak, base_peak, load) -> str:
    """The stage table of both sides (median seconds), the ratio, agreement and peak RSS."""
    cpu = cpu_info().describe()
    lines = [f"per-image analysis, vit_t + ViT-B-32 untrained (seeded); {cpu}; load average {load}"]
    new_s, base_s = _stage_medians(new_runs), (_stage_medians(base_runs) if base_runs else {})
    names = sorted(set(new_s) | set(base_s), key=lambda k: -max(new_s.get(k, 0), base_s.get(k, 0)))
    lines.append(f"{'stage':<26} {'baseline s':>10} {'this s':>10}")
    for k in names:
        b = f"{base_s[k]:.3f}" if k in base_s else "-"
        lines.append(f"{k:<26} {b:>10} {new_s.get(k, 0.0):>10.3f}")
    new_t = statistics.median(r["total_s"] for r in new_runs)
    if base_runs:
        base_t = statistics.median(r["total_s"] for r in base_runs)
        lines.append(f"{'total':<26} {base_t:>10.3f} {new_t:>10.3f}   ratio {new_t / base_t:.2f}")
        lines.append("agreement: " + json.dumps({k: (round(v, 5) if isinstance(v, float) else v)
                                                 for k, v in agree.items()}))
        lines.append(f"peak RSS: baseline {base_peak:.0f} MB, this {new_peak:.0f} MB")
    else:
        lines.append(f"{'total':<26} {'-':>10} {new_t:>10.3f}")
        lines.append(f"peak RSS: {new_peak:.0f} MB")
    return "\n".join(lines)


def decoder_batches(rounds: int = 3, batches=(2, 8, 32), threads=(2, 1)) -> dict:
    """Median ms per prompt of `core.sam.automask.decode_point_batch` (vit_t, untrained) per
    (threads, points_per_batch), alternating the settings within each round."""
    engine = Engine(EngineSettings(sam="vit_t", untrained=True, device="cpu")).load()
    emb = engine.segmenter_for("vit_t").set_image(load_image(DEFAULT_IMAGE))
    sam, before = engine.segmenter_for("vit_t").sam, torch.get_num_threads()
    pe, points = sam.prompt_encoder.get_dense_pe(), torch.rand(32, 2, generator=torch.Generator().manual_seed(0)) * 1000
    times: dict = {}
    try:
        with torch.inference_mode():
            for _ in range(rounds):
                for t in threads:
                    torch.set_num_threads(t)
                    for b in batches:
                        t0 = time.perf_counter()
                        for i in range(0, len(points), b):
                            decode_point_batch(sam, emb.features, pe, points[i:i + b])
                        times.setdefault(f"threads {t}, batch {b}", []).append(
                            1000 * (time.perf_counter() - t0) / len(points))
    finally:
        torch.set_num_threads(before)
    return {k: round(statistics.median(v), 1) for k, v in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another checkout of this repository (e.g. /work/base)")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--rounds", type=int, default=1, help="A B B A rounds (each side runs twice a round)")
    parser.add_argument("--points-per-side", type=int, default=16)
    parser.add_argument("--json", type=Path, help="also write the runs as JSON here")
    parser.add_argument("--decoder", action="store_true", help="time decoder batch sizes x threads only")
    args = parser.parse_args(argv)
    if args.decoder:
        load = machine_load()
        rows = decoder_batches(args.rounds)
        print(f"automatic-mask decoder, vit_t untrained, ms per prompt; {cpu_info().describe()}; "
              f"load average {load} at start, {machine_load()} at end")
        for k, v in rows.items():
            print(f"  {k:<20} {v:>8.1f}")
        return 0
    load_start = machine_load()
    new_runs, base_runs, new_info, base_info = [], [], None, None
    order = ["new", "base", "base", "new"] if args.baseline else ["new"]
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for i, side in enumerate(order):
                checkout = REPO if side == "new" else args.baseline.resolve()
                info = run_worker(checkout, args.image, Path(tmp) / f"{side}{r}{i}.npz", args.points_per_side)
                print(f"{side}: {info['runs'][0]['total_s']:.2f} s", file=sys.stderr, flush=True)
                if side == "new":
                    new_runs += info["runs"]; new_info = info
                else:
                    base_runs += info["runs"]; base_info = info
    agree = agreement(new_info, base_info) if base_info else {}
    load = f"{load_start} at start, {machine_load()} at end"
    print(format_report(new_runs, base_runs, agree, new_info["peak_rss_mb"],
                        base_info["peak_rss_mb"] if base_info else 0.0, load))
    if args.json:
        args.json.write_text(json.dumps({"new": new_runs, "baseline": base_runs, "agreement": agree,
                                         "peak_rss_mb": {"new": new_info["peak_rss_mb"],
                                                         "baseline": base_info and base_info["peak_rss_mb"]},
                                         "cpu": cpu_info().describe(), "load": load}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
