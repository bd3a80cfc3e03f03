"""Subcommand `bench` over core.bench."""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from core.bench import run
from core.cli.args import csv_list
from core.bench.run import RECALL_K, BenchResults, BenchSettings, format_table, run_bench


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bench_settings_from_args(args) -> BenchSettings:
    """BenchSettings from the command-line flags."""
    overrides = {"sam": tuple(csv_list(args.sam)), "clip": args.clip, "trained": args.trained, "device": args.device,
                 "distribution": args.distribution, "stock_everything": args.stock_everything}
    if args.approx_from is not None:
        overrides["approx_min_size"] = args.approx_from
    if args.sizes:
        overrides["sizes"] = tuple(int(float(s)) for s in args.sizes.split(","))
    if args.parts:
        parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
        unknown = sorted(set(parts) - set(BenchSettings.parts))
        if unknown:
            raise ValueError(f"unknown bench parts {unknown}; choose from {', '.join(BenchSettings.parts)}")
        overrides["parts"] = parts
    settings = BenchSettings.for_quick(**overrides) if args.quick else BenchSettings(**overrides)
    if any(n < RECALL_K for n in settings.sizes):
        raise ValueError(f"gallery sizes must be at least {RECALL_K}")
    return settings


def run_bench_command(args) -> int:
    """`python -m core bench`: run, write the JSON, print the table (stderr) and a summary (stdout)."""
    settings = bench_settings_from_args(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(partial: BenchResults) -> None:
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(partial.to_json(), indent=1))
        os.replace(tmp, out)

    results = run_bench(settings, on_part=save)
    save(results)
    _log(format_table(results))
    _log(f"wrote {out}")
    print(json.dumps({"out": str(out), "total_seconds": results.total_seconds, "cpu": results.machine["cpu_text"],
                      "checks": [asdict(c) for c in results.checks()]}))
    return 0


def register(subparsers) -> None:
    """Add `bench` to `python -m core`."""
    parser = subparsers.add_parser("bench", help="speed and memory of SAM, CLIP and faiss against the targets",
                                   description=run.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller galleries (<= 100k) and fewer repeats")
    parser.add_argument("--out", default="runs/bench.json", help="JSON output (default: %(default)s)")
    parser.add_argument("--sizes", help="comma-separated gallery sizes (default 1k,10k,100k,1M; quick: up to 100k)")
    parser.add_argument("--approx-from", type=int, help="build the approximate index from this size up "
                        "(default 100000)")
    parser.add_argument("--parts", help=f"comma-separated subset of {','.join(BenchSettings.parts)}")
    parser.add_argument("--distribution", choices=("clustered", "uniform"), default="clustered",
                        help="synthetic vectors (default: %(default)s)")
    parser.add_argument("--sam", default="vit_t,vit_b",
                        help="SAM models, comma-separated, measured side by side (default: %(default)s)")
    parser.add_argument("--clip", default="ViT-B-32", help="CLIP model (default: %(default)s)")
    parser.add_argument("--trained", action="store_true", help="load real weights (timings do not need them)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--stock-everything", action="store_true",
                        help="also time segment_anything's SamAutomaticMaskGenerator, 32x32 (adds ~100 s; not with --quick)")
    parser.set_defaults(func=run_bench_command)
