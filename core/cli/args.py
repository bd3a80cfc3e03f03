"""Options shared by the commands and app.py, and the one place parsed arguments become settings.

`engine_settings_from_args` is what both `python -m core ...` and `python app.py` use, so a
model flag means the same everywhere.
"""
from __future__ import annotations

import argparse
import json
import sys

from core import config
from core.automask import AutoMaskSettings
from core.engine import Engine, EngineSettings
from core.refer import GLOBAL_EMPHASES, SCORINGS, GroundingSettings
from core.views import VIEW_NAMES


def add_model_arguments(parser: argparse.ArgumentParser, *, sam: bool = True, clip: bool = True) -> None:
    """The model options every model-using command (and the app) shares."""
    group = parser.add_argument_group("models")
    group.add_argument("--untrained", action="store_true",
                       help="random weights (no download); outputs are meaningless and say so")
    if sam:
        group.add_argument("--sam", default=config.SAM_MODEL, help="vit_t (MobileSAM, fast on CPUs) | vit_b | vit_l | vit_h (default %(default)s)")
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


def engine_settings_from_args(args: argparse.Namespace) -> EngineSettings:
    """The `EngineSettings` of the model options in `args` (those a parser left out keep defaults)."""
    return EngineSettings(
        sam=getattr(args, "sam", config.SAM_MODEL), sam_checkpoint=getattr(args, "sam_checkpoint", None),
        clip=getattr(args, "clip", config.CLIP_MODEL), pretrained=getattr(args, "pretrained", config.CLIP_PRETRAINED),
        clip_checkpoint=getattr(args, "clip_checkpoint", None), untrained=args.untrained,
        fast=not getattr(args, "no_fast", False),
        sam_precision=getattr(args, "sam_precision", config.SAM_PRECISION), device=args.device)


def engine_from_args(args: argparse.Namespace) -> Engine:
    """An `Engine` for the model options in `args`; warns on stderr when untrained."""
    engine = Engine(engine_settings_from_args(args))
    if engine.untrained:
        print(f"note: {engine.label}", file=sys.stderr)
    return engine


def print_json(obj) -> None:
    """One JSON document on stdout."""
    print(json.dumps(obj))


def csv_list(text: str) -> list[str]:
    """"a, b,,c" -> ["a", "b", "c"]."""
    return [t.strip() for t in text.split(",") if t.strip()]


def add_grounding_arguments(parser: argparse.ArgumentParser, *, ablation_flags: bool = True) -> None:
    """The grounding flags shared by `refer` and `evaluate refer`."""
    g = parser.add_argument_group("grounding")
    if ablation_flags:
        g.add_argument("--scoring", choices=SCORINGS, default="mixed", help="default: %(default)s")
        g.add_argument("--no-orientation", action="store_true", help="ignore direction words")
    g.add_argument("--global-weight", type=float, default=0.5,
                   help="weight of the global score in mixed scoring (default: %(default)s)")
    g.add_argument("--local-view", choices=VIEW_NAMES, default="crop", help="default: %(default)s")
    g.add_argument("--global-emphasis", choices=GLOBAL_EMPHASES, default="dim", help="default: %(default)s")
    g.add_argument("--top-k", type=int, default=3, help="candidates the direction chooses among (0 = all)")
    g.add_argument("--max-candidates", type=int, default=64, help="SAM candidates kept (0 = all)")
    g.add_argument("--points-per-side", type=int, default=16, help="SAM automatic mask grid")
    g.add_argument("--pred-iou-thresh", type=float, default=None,
                   help="SAM automatic mask IoU threshold (default 0.88; use 0 with --untrained)")
    g.add_argument("--stability-thresh", type=float, default=None,
                   help="SAM stability threshold (default 0.95; use 0 with --untrained)")


def automask_settings_from_args(args: argparse.Namespace) -> AutoMaskSettings:
    """AutoMaskSettings from --points-per-side, --pred-iou-thresh and --stability-thresh."""
    defaults = AutoMaskSettings()
    return AutoMaskSettings(
        points_per_side=args.points_per_side,
        pred_iou_thresh=defaults.pred_iou_thresh if args.pred_iou_thresh is None else args.pred_iou_thresh,
        stability_score_thresh=(defaults.stability_score_thresh if args.stability_thresh is None
                                else args.stability_thresh))


def grounding_settings_from_args(args: argparse.Namespace) -> GroundingSettings:
    """GroundingSettings from the `refer` / `evaluate refer` flags."""
    return GroundingSettings(
        scoring=getattr(args, "scoring", "mixed"), global_weight=args.global_weight,
        local_view=args.local_view, global_emphasis=args.global_emphasis,
        orientation=not getattr(args, "no_orientation", False),
        top_k=None if args.top_k == 0 else args.top_k, automask=automask_settings_from_args(args),
        max_candidates=None if args.max_candidates == 0 else args.max_candidates)
