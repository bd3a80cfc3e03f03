"""The `python -m core` parser and entry point.

Each module here adds its subcommands with `register(subparsers)`; parsers carry
`func(args) -> int`. Machine-readable output goes to stdout (JSON), messages to stderr; bad
input exits 2 with a one-line reason. The library never imports this package.
"""
from __future__ import annotations

import argparse
import sys

from core.cli import bench, commands, evaluate, find, refer

#: Errors that mean "bad input or missing set-up", reported in one line (exit code 2).
EXPECTED_ERRORS = (ValueError, FileNotFoundError, RuntimeError, OSError, KeyError)


def build_parser() -> argparse.ArgumentParser:
    """The `python -m core` parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="python -m core",
                                     description="Find and select objects in images with SAM + CLIP.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in (commands, bench, refer, find, evaluate):
        module.register(sub)
    bench.register_gallery(sub)
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
