"""Options shared by the commands and app.py, and the one place parsed arguments become settings.

`engine_settings_from_args` is what both `python -m core ...` and `python app.py` use, so a
model flag means the same everywhere.
"""
from __future__ import annotations

import argparse
import json
import sys

from core import config
from core.sam.automask import AutoMaskSettings
from core.engine import Engine, EngineSettings, automask_for, sam_label
from core.embed import GRID_RESIZES
from core.sam.variants import sam_variant_names
from core.refer import GLOBAL_EMPHASES, LOCAL_FILLS, METHODS, SCORINGS, GroundingSettings
from core.views import VIEW_NAMES


def sam_choices_help() -> str:
    """"vit_b (SAM ViT-B, as in the papers) | vit_t (fast (MobileSAM)) | ...": the registered SAMs."""
    return " | ".join(f"{n} ({sam_label(n)})" for n in sam_variant_names())


def add_model_arguments(parser: argparse.ArgumentParser, *, sam: bool = True, clip: bool = True,
                        sam_default: str | None = None) -> None:
    """The model options every model-using command (and the app) shares.

    sam_default: the --sam default; None = by device (`core.models.default_sam_model`: vit_t on a
    CPU, vit_b on a GPU, or $SAMCLIP_SAM_MODEL), resolved when the settings are built.
    """
    group = parser.add_argument_group("models")
    group.add_argument("--untrained", action="store_true",
                       help="random weights (no download); outputs are meaningless and say so")
    if sam:
        default = sam_default or "$SAMCLIP_SAM_MODEL, else vit_t on a CPU and vit_b on a GPU"
        group.add_argument("--sam", default=sam_default, help=f"{sam_choices_help()} (default: {default})")
        group.add_argument("--sam-checkpoint", default=None, help="path to the SAM .pth file")
        group.add_argument("--no-fast", action="store_true", help="stock SAM (turn the fast path off)")
        group.add_argument("--sam-precision", default=config.SAM_PRECISION, choices=config.SAM_PRECISIONS,
                           help="fast-path precision: auto = on a CPU with native bf16 the faster of fp32/bf16 "
                                "(measured once, remembered), fp32 on other CPUs, bf16/fp16 on a GPU; fp32 gives "
                                "masks identical to stock SAM (default %(default)s)")
    if clip:
        group.add_argument("--clip", default=config.CLIP_MODEL, help="open_clip model name (default %(default)s)")
        group.add_argument("--pretrained", default=config.CLIP_PRETRAINED, help="open_clip weights tag")
        group.add_argument("--clip-checkpoint", default=None, help="path to a CLIP weights file")
    group.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def engine_settings_from_args(args: argparse.Namespace) -> EngineSettings:
    """The `EngineSettings` of the model options in `args` (those a parser left out keep defaults)."""
    return EngineSettings(
        sam=getattr(args, "sam", None), sam_checkpoint=getattr(args, "sam_checkpoint", None),
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


def add_grounding_arguments(parser: argparse.ArgumentParser, *, ablation_flags: bool = True,
                            points_per_side: int = 16) -> None:
    """The grounding flags shared by `refer` and `evaluate refer` (defaults: GroundingSettings')."""
    d = GroundingSettings()
    g = parser.add_argument_group("grounding (Global-Local CLIP as published unless --method score_mix)")
    g.add_argument("--method", choices=METHODS, default=d.method,
                   help="global_local: features mixed, token masking (published); score_mix: the earlier "
                        "variant that mixes cosine scores of dimmed/blurred views (default: %(default)s)")
    if ablation_flags:
        g.add_argument("--scoring", choices=SCORINGS, default=d.scoring, help="default: %(default)s")
        g.add_argument("--no-orientation", action="store_true", help="ignore direction words")
    g.add_argument("--visual-weight", type=float, default=None,
                   help=f"global_local: v in v*global + (1-v)*local (default {d.visual_weight}; "
                        "`evaluate refer` picks 0.95 for RefCOCO/RefCOCO+ data)")
    g.add_argument("--text-weight", type=float, default=d.text_weight,
                   help="global_local: r in r*sentence + (1-r)*noun phrase (default: %(default)s)")
    g.add_argument("--masking-block", type=int, default=d.masking_block,
                   help="global_local: first ViT block with masked patch tokens; negative counts from "
                        "the end (default: %(default)s)")
    g.add_argument("--local-fill", choices=LOCAL_FILLS, default=d.local_fill,
                   help="global_local: pixels outside the mask in the local view (default: %(default)s)")
    g.add_argument("--token-mask-resize", choices=GRID_RESIZES, default=d.token_mask_resize,
                   help="global_local: mask -> token grid (default: %(default)s)")
    g.add_argument("--normalise-features", action="store_true",
                   help="global_local: unit-normalise features before mixing (the authors do not)")
    g.add_argument("--global-weight", type=float, default=d.global_weight,
                   help="score_mix: weight of the global score (default: %(default)s)")
    g.add_argument("--local-view", choices=VIEW_NAMES, default=d.local_view, help="score_mix (default: %(default)s)")
    g.add_argument("--global-emphasis", choices=GLOBAL_EMPHASES, default=d.global_emphasis,
                   help="score_mix (default: %(default)s)")
    g.add_argument("--top-k", type=int, default=d.top_k, help="candidates the direction chooses among (0 = all)")
    g.add_argument("--max-candidates", type=int, default=d.max_candidates, help="SAM candidates kept (0 = all)")
    g.add_argument("--min-area-fraction", type=float, default=d.min_area_fraction,
                   help="drop SAM candidates smaller than this fraction of the image (default: %(default)s)")
    _automask_flags(g, points_per_side)


def add_automask_arguments(parser: argparse.ArgumentParser, points_per_side: int = 16) -> None:
    """SAM's automatic-mask flags alone (for commands that need no grounding flags)."""
    _automask_flags(parser.add_argument_group("SAM automatic masks"), points_per_side)


def _automask_flags(g, points_per_side: int) -> None:
    g.add_argument("--points-per-side", type=int, default=points_per_side,
                   help="SAM automatic mask grid (default: %(default)s)")
    g.add_argument("--pred-iou-thresh", type=float, default=None,
                   help="SAM automatic mask IoU threshold (default 0.88; 0 with --untrained)")
    g.add_argument("--stability-thresh", type=float, default=None,
                   help="SAM stability threshold (default 0.95; 0 with --untrained)")


def automask_settings_from_args(args: argparse.Namespace) -> AutoMaskSettings:
    """AutoMaskSettings from --points-per-side, --pred-iou-thresh and --stability-thresh; with
    --untrained the thresholds not given are 0, as in the app (`core.engine.automask_for`)."""
    given = {"points_per_side": args.points_per_side}
    if getattr(args, "pred_iou_thresh", None) is not None:
        given["pred_iou_thresh"] = args.pred_iou_thresh
    if getattr(args, "stability_thresh", None) is not None:
        given["stability_score_thresh"] = args.stability_thresh
    return automask_for(bool(getattr(args, "untrained", False)), **given)


def grounding_settings_from_args(args: argparse.Namespace, *, visual_weight: float | None = None) -> GroundingSettings:
    """GroundingSettings from the `refer` / `evaluate refer` flags.

    visual_weight: v to use when --visual-weight is not given (e.g. the dataset's value);
    GroundingSettings' default otherwise.
    """
    d = GroundingSettings()
    v = args.visual_weight if args.visual_weight is not None else (visual_weight or d.visual_weight)
    return GroundingSettings(
        method=args.method, scoring=getattr(args, "scoring", d.scoring), visual_weight=v,
        text_weight=args.text_weight, masking_block=args.masking_block, local_fill=args.local_fill,
        token_mask_resize=args.token_mask_resize, normalise_features=args.normalise_features,
        global_weight=args.global_weight, local_view=args.local_view, global_emphasis=args.global_emphasis,
        orientation=not getattr(args, "no_orientation", False),
        top_k=None if args.top_k == 0 else args.top_k, automask=automask_settings_from_args(args),
        min_area_fraction=args.min_area_fraction,
        max_candidates=None if args.max_candidates == 0 else args.max_candidates)
