"""Subcommands `evaluate retrieval` and `evaluate refer` over core.evaluate."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from core.cli.args import (
    add_automask_arguments,
    add_grounding_arguments,
    add_model_arguments,
    automask_settings_from_args,
    csv_list,
    engine_from_args,
    grounding_settings_from_args,
)
from core.evaluate import PAPER_SAM
from core.evaluate import label as label_eval
from core.evaluate import refer as refer_eval
from core.evaluate import refer_data, retrieval
from core.evaluate import suggest as suggest_eval
from core.evaluate.retrieval import SelectionSettings
from core.embed import Embedder
from core.models import load_clip
from core.views import VIEW_NAMES


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- evaluate retrieval


def selection_from_args(args) -> SelectionSettings:
    """SelectionSettings from the recipe, overridden by the explicit flags."""
    if args.recipe == "paper":
        base = SelectionSettings()
    else:
        base = SelectionSettings(categories=None, limit_images=None, max_per_image=None)
    cats = base.categories
    if args.categories:
        cats = None if args.categories.strip() == "all" else tuple(csv_list(args.categories))
    limit = base.limit_images if args.limit_images is None else (args.limit_images or None)
    return SelectionSettings(
        categories=cats, limit_images=limit,
        min_per_category=base.min_per_category if args.min_per_category is None else args.min_per_category,
        max_per_image=base.max_per_image if args.max_per_image is None else (args.max_per_image or None),
        min_area=args.min_area, seed=args.seed)


def run_retrieval(args) -> int:
    """Entry point of `python -m core evaluate retrieval`: prints a summary JSON on stdout.

    Bad input raises ValueError / FileNotFoundError, which `core.cli.main` reports in one line.
    """
    views = list(VIEW_NAMES) if args.views == "all" else csv_list(args.views)
    metrics = csv_list(args.metrics)
    coco = Path(args.coco)
    images = Path(args.images) if args.images else coco.parent / "images"
    report = retrieval.run_evaluation(coco, images, views, metrics, args.k, selection_from_args(args),
                            oracle_masks=args.oracle_masks, engine=engine_from_args(args),
                            batch_size=args.batch_size, progress=not args.quiet)
    written = retrieval.write_outputs(report, args.out, plots=not args.no_plots)
    _log(retrieval.markdown_report(report))
    _log("wrote " + ", ".join(str(p) for p in written))
    summary = {"out": str(args.out), "models": asdict(report.models), "n_objects": len(report.objects),
               "results": [{"view": r.view, "metric": r.metric, "precision_at_k": r.overall.precision_at_k,
                            "recall_at_k": r.overall.recall_at_k, "mAP": r.overall.mean_ap}
                           for r in report.results]}
    print(json.dumps(summary))
    return 0


def add_retrieval_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `evaluate retrieval`."""
    parser.add_argument("--coco", required=True, help="COCO instances JSON")
    parser.add_argument("--images", help="folder of the images (default: images/ beside the JSON)")
    parser.add_argument("--out", default="runs/retrieval", help="output folder (default: %(default)s)")
    parser.add_argument("--views", default="all", help="comma-separated views, or 'all' (default: %(default)s)")
    parser.add_argument("--metrics", default="cosine,l2", help="comma-separated: cosine,l2 (default: %(default)s)")
    parser.add_argument("--k", type=int, default=5, help="cut-off K of P@K and R@K (default: %(default)s)")
    parser.add_argument("--recipe", choices=("paper", "all"), default="paper",
                        help="paper: 30 images covering person/dog/cat/car/bicycle, <= 2 objects per image, "
                             ">= 2 objects per category; all: every image, category and object. "
                             "Flags below override it.")
    parser.add_argument("--categories", help="comma-separated category names, or 'all'")
    parser.add_argument("--limit-images", type=int, help="at most this many images (0 = no limit)")
    parser.add_argument("--min-per-category", type=int, help="drop categories with fewer objects (default 2)")
    parser.add_argument("--max-per-image", type=int, help="at most this many objects per image (0 = all)")
    parser.add_argument("--min-area", type=float, default=0.0, help="skip objects smaller than this many pixels")
    parser.add_argument("--seed", type=int, default=0, help="image selection seed (default: %(default)s)")
    parser.add_argument("--oracle-masks", action="store_true", help="use ground-truth masks instead of SAM")
    parser.add_argument("--batch-size", type=int, default=32, help="CLIP batch size (default: %(default)s)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_arguments(parser, sam_default=PAPER_SAM)



# ----------------------------------------------------------------------------- evaluate refer


def dataset_from_args(args) -> refer_data.ReferDataset:
    """The dataset the flags name: --refs/--instances/--images, --jsonl or --synthetic-coco."""
    chosen = [bool(args.refs), bool(args.jsonl), bool(args.synthetic_coco)]
    if sum(chosen) != 1:
        raise ValueError("give exactly one of --refs (with --instances and --images), --jsonl or --synthetic-coco")
    if args.refs:
        if not args.instances or not args.images:
            raise ValueError("--refs needs --instances (COCO instances.json) and --images (COCO train2014 folder)")
        dataset = refer_data.read_refcoco(args.refs, args.instances, args.images, split=args.split)
    elif args.jsonl:
        dataset = refer_data.read_jsonl(args.jsonl, images_dir=args.images, split=args.split)
    else:
        dataset = refer_data.synthetic_from_coco(args.synthetic_coco, max_same=args.max_same, min_gap=args.min_gap,
                                      seed=args.seed, limit_images=args.limit_images or None)
    if args.limit:
        dataset.samples = dataset.samples[:args.limit]
    return dataset


def rows_from_args(args) -> list:
    """The rows `--rows` names: "paper" (the default, unless --candidates/--scorings/--methods ask
    for the grid), "ablation", or a comma list of the paper's row names."""
    grid_flags = any(v is not None for v in (args.candidates, args.scorings, args.methods))
    which = args.rows or ("ablation" if grid_flags else "paper")
    mask_source = "file" if args.candidate_masks else "gt"
    if which == "ablation":
        default_sources = "gt,file,sam" if args.candidate_masks else "gt,sam"
        return refer_eval.ablation_rows(csv_list(args.candidates or default_sources),
                                        csv_list(args.scorings or "oracle,local,global,mixed"),
                                        csv_list(args.methods or "global_local"))
    names = list(refer_eval.PAPER_ROWS) if which == "paper" else csv_list(which)
    return refer_eval.paper_rows(mask_source, names)


def run_refer_evaluation(args) -> int:
    """`python -m core evaluate refer`: table on stderr, report.json/.md in --out, summary JSON on stdout."""
    dataset = dataset_from_args(args)
    if args.write_jsonl:
        print(f"wrote {refer_data.write_jsonl(dataset, args.write_jsonl)} ({len(dataset)} samples)", file=sys.stderr)
    rows = rows_from_args(args)
    mask_file = refer_data.read_candidate_masks(args.candidate_masks) if args.candidate_masks else None
    settings = grounding_settings_from_args(args, visual_weight=refer_eval.visual_weight_for(dataset.name))
    segmenter = embedder = models = None
    untrained = None
    if any(r.uses_clip for r in rows):
        engine = engine_from_args(args)
        embedder = engine.embedder
        if any(r.candidates == "sam" for r in rows):
            segmenter = engine.segmenter
        models, untrained = engine.label, engine.untrained
    report = refer_eval.evaluate(dataset, rows, settings, segmenter=segmenter, embedder=embedder,
                                 mask_file=mask_file, progress=not args.quiet, models=models, untrained=untrained)
    written = refer_eval.write_report(report, args.out)
    print(refer_eval.markdown_table(report), file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    print(json.dumps({"out": str(args.out), "dataset": report.dataset, "split": report.split,
                      "n_samples": report.n_samples, "n_with_direction": report.n_with_direction,
                      "models": models, "results": [{"row": r.name, "oIoU": r.all.oIoU, "mIoU": r.all.mIoU,
                                                     "oIoU_direction": r.with_direction.oIoU,
                                                     "mIoU_direction": r.with_direction.mIoU,
                                                     "paper": ([r.row.paper.oIoU, r.row.paper.mIoU]
                                                               if r.row.paper else None)}
                                                    for r in report.results]}))
    return 0


def add_refer_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `evaluate refer`."""
    data = parser.add_argument_group("data (one of --refs, --jsonl, --synthetic-coco)")
    data.add_argument("--refs", help="RefCOCO-family refs pickle, e.g. refcocog/refs(umd).p")
    data.add_argument("--instances", help="with --refs: the instances.json beside it")
    data.add_argument("--images", help="image folder (--refs: COCO train2014; --jsonl: base of relative paths)")
    data.add_argument("--split", help="keep this split only (val, testA, test, ...)")
    data.add_argument("--jsonl", help="JSON-lines samples (see `evaluate refer --help` description)")
    data.add_argument("--synthetic-coco", help="generate sentences from a COCO folder (images/ + instances.json)")
    data.add_argument("--max-same", type=int, default=3, help="synthetic: at most this many objects of the category")
    data.add_argument("--min-gap", type=float, default=0.05, help="synthetic: least centre gap, fraction of the image")
    data.add_argument("--seed", type=int, default=0, help="synthetic: template seed (default: %(default)s)")
    data.add_argument("--limit-images", type=int, default=0, help="synthetic: first N images only (0 = all)")
    data.add_argument("--limit", type=int, default=0, help="first N sentences only (0 = all)")
    data.add_argument("--write-jsonl", help="also save the samples in the JSON-lines format here")
    data.add_argument("--candidate-masks",
                      help="JSON lines {image, masks: [RLE]} of another mask source (e.g. FreeSOLO): the "
                           "candidates of the global-local row (else the annotated instances)")
    rows = parser.add_argument_group("rows")
    rows.add_argument("--rows", default=None,
                      help="paper (default): global-local, global-local+sam, global-local+sam+orientation; "
                           "ablation: the grid of --candidates x --methods x --scorings x orientation; or a "
                           "comma list of the paper's row names")
    rows.add_argument("--candidates", default=None, help="ablation: candidate sources gt,file,sam (default gt,sam)")
    rows.add_argument("--scorings", default=None, help="ablation: oracle,local,global,mixed (default: all)")
    rows.add_argument("--methods", default=None, help="ablation: global_local,score_mix (default global_local)")
    parser.add_argument("--out", default="runs/refer", help="output folder (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_grounding_arguments(parser, ablation_flags=False, points_per_side=32)
    add_model_arguments(parser, sam_default=PAPER_SAM)


def run_label_evaluation(args) -> int:
    """`python -m core evaluate label`: COCOeval AP and PQ per row, find-all P/R; JSON on stdout."""
    rows = tuple(csv_list(args.rows))
    coco = Path(args.coco)
    images = Path(args.images) if args.images else coco.parent / "images"
    engine = engine_from_args(args) if set(rows) - {"oracle"} else None
    settings = label_eval.LabelEvalSettings(rows=rows, limit=args.limit or None,
                                            automask=automask_settings_from_args(args), find=not args.no_find)
    report = label_eval.evaluate_labels(coco, images, engine, settings, progress=not args.quiet)
    report["models"] = engine.label if engine is not None else "none (oracle row only)"
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "label_eval.json").write_text(json.dumps(report, indent=1))
        _log(f"wrote {out / 'label_eval.json'}")
    print(json.dumps(report))
    return 0


def add_label_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coco", required=True, help="COCO instances JSON")
    parser.add_argument("--images", help="image folder (default: images/ beside the JSON)")
    parser.add_argument("--rows", default=",".join(label_eval.ROWS),
                        help="comma list of rows: oracle (ground-truth masks + labels), gt-masks+clip, sam+clip "
                             "(default: all)")
    parser.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
    parser.add_argument("--no-find", action="store_true", help="skip the find-all precision / recall")
    parser.add_argument("--out", help="folder for label_eval.json")
    parser.add_argument("--quiet", action="store_true")
    add_automask_arguments(parser)
    add_model_arguments(parser, sam_default=PAPER_SAM)


def run_suggest_evaluation(args) -> int:
    """`python -m core evaluate suggest`: top-1 / top-3 of class suggestions against examples seen."""
    rows = tuple(csv_list(args.rows))
    settings = suggest_eval.SuggestEvalSettings(rows=rows, limit=args.limit or None, min_area=args.min_area,
                                                view=args.view, k=args.k, n0=args.n0)
    embedder = None
    if "clip" in rows:
        embedder = Embedder(load_clip(args.clip, args.pretrained, checkpoint=args.clip_checkpoint,
                                      untrained=args.untrained, device=args.device))
        if args.untrained:
            _log("note: untrained CLIP (random weights): the clip row is chance-like by design")
    report = suggest_eval.evaluate_suggestions(Path(args.coco), args.images, embedder, settings)
    report["models"] = "none (oracle row only)" if embedder is None else \
        f"{args.clip} {'untrained' if args.untrained else args.pretrained}"
    _log(suggest_eval.format_table(report))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "suggest_eval.json").write_text(json.dumps(report, indent=1))
        (out / "suggest_eval.md").write_text(suggest_eval.format_table(report) + "\n")
        _log(f"wrote {out / 'suggest_eval.json'}")
    print(json.dumps(report))
    return 0


def add_suggest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coco", required=True, help="COCO instances JSON")
    parser.add_argument("--images", help="image folder (default: images/ beside the JSON)")
    parser.add_argument("--rows", default=",".join(suggest_eval.ROWS),
                        help="comma list: oracle (one-hot features of the true class), clip (default: both)")
    parser.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
    parser.add_argument("--min-area", type=int, default=64, help="smallest object, pixels (default %(default)s)")
    parser.add_argument("--view", default=suggest_eval.DEFAULT_VIEW, choices=VIEW_NAMES,
                        help="object view CLIP embeds (default %(default)s)")
    parser.add_argument("--k", type=int, default=10, help="neighbours that vote (default %(default)s)")
    parser.add_argument("--n0", type=float, default=2.0,
                        help="examples at which the person's weight reaches 1/2 (default %(default)s)")
    parser.add_argument("--out", help="folder for suggest_eval.json and suggest_eval.md")
    add_model_arguments(parser, sam=False)


def register(subparsers) -> None:
    """Add `evaluate retrieval` and `evaluate refer` to `python -m core`."""
    evaluate = subparsers.add_parser("evaluate", help="evaluations (retrieval, referring expressions, labelling)")
    sub = evaluate.add_subparsers(dest="evaluation", metavar="EVALUATION")
    sub.required = True
    parser = sub.add_parser("retrieval", help="object retrieval P@K / R@K / mAP per view x metric",
                            description=retrieval.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_retrieval_arguments(parser)
    parser.set_defaults(func=run_retrieval)
    parser = sub.add_parser("refer", help="referring segmentation oIoU / mIoU: the paper's rows or an ablation",
                            description=refer_eval.__doc__ + "\n" + refer_data.__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_refer_arguments(parser)
    parser.set_defaults(func=run_refer_evaluation)
    parser = sub.add_parser("label", help="labelling: COCOeval segm AP and panoptic quality; find-all P/R",
                            description=label_eval.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_label_arguments(parser)
    parser.set_defaults(func=run_label_evaluation)
    parser = sub.add_parser("suggest", help="class suggestions: top-1 / top-3 against named examples seen",
                            description=suggest_eval.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_suggest_arguments(parser)
    parser.set_defaults(func=run_suggest_evaluation)
