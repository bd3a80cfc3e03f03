"""`python -m core`: subcommands registered from modules.

Each module in COMMAND_MODULES defines `register(subparsers)`, adding parsers whose
`func(args) -> int` does the work; modules in EVALUATE_MODULES define
`register_evaluate(subparsers)` under `python -m core evaluate`. Machine-readable output
goes to stdout (JSON), messages to stderr; bad input exits non-zero with a one-line reason.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys

from core import config

COMMAND_MODULES = ["core.commands", "core.bench", "core.refer"]
EVALUATE_MODULES: list[str] = ["core.eval_retrieval", "core.refer_eval"]

#: Errors that mean "bad input or missing set-up", reported in one line (exit code 2).
EXPECTED_ERRORS = (ValueError, FileNotFoundError, RuntimeError, OSError, KeyError)


def add_model_arguments(parser: argparse.ArgumentParser, *, sam: bool = True, clip: bool = True) -> None:
    """The model options every model-using command shares."""
    group = parser.add_argument_group("models")
    group.add_argument("--untrained", action="store_true",
                       help="random weights (no download); outputs are meaningless and say so")
    if sam:
        group.add_argument("--sam", default=config.SAM_MODEL, help="vit_b | vit_l | vit_h (default %(default)s)")
        group.add_argument("--sam-checkpoint", default=None, help="path to the SAM .pth file")
        group.add_argument("--no-fast", action="store_true", help="stock SAM (turn the fast path off)")
        group.add_argument("--sam-precision", default=config.SAM_PRECISION, choices=config.SAM_PRECISIONS,
                           help="fast-path precision: auto = bf16 where the CPU/GPU supports it; fp32 gives "
                                "masks identical to stock SAM (default %(default)s)")
    if clip:
        group.add_argument("--clip", default=config.CLIP_MODEL, help="open_clip model name (default %(default)s)")
        group.add_argument("--pretrained", default=config.CLIP_PRETRAINED, help="open_clip weights tag")
        group.add_argument("--clip-checkpoint", default=None, help="path to a CLIP weights file")
    group.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def engine_from_args(args):
    """An `core.engine.Engine` for the model options in `args`; warns on stderr when untrained."""
    from core.engine import Engine, EngineSettings

    settings = EngineSettings(
        sam=getattr(args, "sam", config.SAM_MODEL), sam_checkpoint=getattr(args, "sam_checkpoint", None),
        clip=getattr(args, "clip", config.CLIP_MODEL), pretrained=getattr(args, "pretrained", config.CLIP_PRETRAINED),
        clip_checkpoint=getattr(args, "clip_checkpoint", None), untrained=args.untrained,
        fast=not getattr(args, "no_fast", False),
        sam_precision=getattr(args, "sam_precision", config.SAM_PRECISION), device=args.device)
    engine = Engine(settings)
    if settings.untrained:
        print(f"note: {engine.label}", file=sys.stderr)
    return engine


def print_json(obj) -> None:
    """One JSON document on stdout."""
    print(json.dumps(obj))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core",
                                     description="Find and select objects in images with SAM + CLIP.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    if EVALUATE_MODULES:
        evaluate = sub.add_parser("evaluate", help="evaluations (retrieval, referring expressions)")
        eval_sub = evaluate.add_subparsers(dest="evaluation", metavar="EVALUATION")
        eval_sub.required = True
        for name in EVALUATE_MODULES:
            importlib.import_module(name).register_evaluate(eval_sub)
    return parser


def main(argv=None) -> int:
    """Parse `argv`, run the command, map expected errors to a one-line message and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except EXPECTED_ERRORS as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
