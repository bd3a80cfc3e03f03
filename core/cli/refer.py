"""Subcommands `parse TEXT` and `refer IMAGE TEXT` over core.refer."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from core.cli.args import (
    add_grounding_arguments,
    add_model_arguments,
    engine_from_args,
    grounding_settings_from_args,
)
from core.io.images import load_image
from core.io.masks import mask_to_png
from core.refer import ground, parse


def run_parse(args) -> int:
    """`python -m core parse TEXT...`: one Expression as JSON per sentence (a list when several)."""
    records = [parse(text).to_dict() for text in args.text]
    print(json.dumps(records[0] if len(records) == 1 else records))
    return 0


def run_refer(args) -> int:
    """`python -m core refer IMAGE TEXT`: ground a sentence; JSON summary on stdout, mask PNG in --out."""
    settings = grounding_settings_from_args(args)
    engine = engine_from_args(args)
    image = load_image(Path(args.image))
    result = ground(engine.segmenter, engine.embedder, image, args.text, settings=settings)
    summary = result.summary(top=args.show)
    summary["models"] = engine.label
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "mask.png").write_bytes(mask_to_png(result.mask))
        (out / "result.json").write_text(json.dumps(summary, indent=2))
        summary["mask_png"] = str(out / "mask.png")
        print(f"wrote {out / 'mask.png'} and {out / 'result.json'}", file=sys.stderr)
    print(json.dumps(summary))
    return 0


def register(subparsers) -> None:
    """Add `parse` and `refer` to `python -m core`."""
    p = subparsers.add_parser("parse", help="parse a referring expression (noun, direction, ordinal) as JSON",
                              description="Prints the parsed record of each sentence as JSON.")
    p.add_argument("text", nargs="+", help='a referring expression, e.g. "the second dog from the left"')
    p.set_defaults(func=run_parse)

    p = subparsers.add_parser("refer", help="segment the object a sentence names (SAM + CLIP + direction)",
                              description="Grounds TEXT in IMAGE; prints the parse, the chosen box and the "
                                          "top candidates as JSON; --out also writes mask.png.")
    p.add_argument("image")
    p.add_argument("text")
    p.add_argument("--out", help="folder for mask.png and result.json")
    p.add_argument("--show", type=int, default=5, help="candidates listed in the JSON (default: %(default)s)")
    add_grounding_arguments(p)
    add_model_arguments(p)
    p.set_defaults(func=run_refer)
