"""Subcommands `bench` (engine stages) and `bench-gallery` (index choice, ingestion) over core.bench."""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from core.bench import run, search
from core.bench.run import (
    RECALL_K,
    BenchResults,
    BenchSettings,
    format_table,
    run_bench,
)
from core.bench.timing import cpu_info
from core.cli.args import csv_list
from core.sam.variants import sam_variant_names


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
                        help=f"SAM models, comma-separated, measured side by side, of "
                             f"{', '.join(sam_variant_names())} (default: %(default)s)")
    parser.add_argument("--clip", default="ViT-B-32", help="CLIP model (default: %(default)s)")
    parser.add_argument("--trained", action="store_true", help="load real weights (timings do not need them)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--stock-everything", action="store_true",
                        help="also time segment_anything's SamAutomaticMaskGenerator, 32x32 (adds ~100 s; not with --quick)")
    parser.set_defaults(func=run_bench_command)


def run_bench_gallery(args) -> int:
    """`python -m core bench-gallery index|ingest|resume`: one JSON line per measurement on stdout
    (the first names the CPU)."""
    print(json.dumps({"cpu": cpu_info().describe(), "loadavg_start": list(os.getloadavg())}), flush=True)
    if args.what == "index":
        base = search.coco_object_vectors(search.COCO) if args.data == "coco" else None
        for n in args.sizes:
            print(json.dumps(search.bench_index(n, args.data, args.metric, base)), flush=True)
    elif args.what == "ingest":
        print(json.dumps(search.bench_ingest(args.images, args.workers, args.ray)))
    else:
        print(json.dumps(search.bench_resume(args.kills)))
    return 0


def register_gallery(subparsers) -> None:
    """Add `bench-gallery` to `python -m core`."""
    parser = subparsers.add_parser("bench-gallery", help="gallery scale: index chosen by size, ingestion, resume",
                                   description=search.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    a = sub.add_parser("index", help="build + tune the index a gallery of N vectors chooses; time one query")
    a.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    a.add_argument("--data", choices=["clustered", "coco"], default="clustered")
    a.add_argument("--metric", choices=["cosine", "l2"], default="cosine")
    b = sub.add_parser("ingest", help="images/s and objects/s in-process, with workers, on Ray")
    b.add_argument("--images", type=int, default=16)
    b.add_argument("--workers", type=int, nargs="*", default=[0, 2])
    b.add_argument("--ray", type=int, nargs="*", default=[1, 2])
    c = sub.add_parser("resume", help="kill -9 an ingestion at random points; duplicated / lost objects")
    c.add_argument("--kills", type=int, default=5)
    parser.set_defaults(func=run_bench_gallery)
