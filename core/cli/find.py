"""Subcommands `find IMAGE PHRASE` (every instance) and `label IMAGE --out DIR` (semantic,
instance and panoptic outputs) over core.find."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from core.cli.args import add_automask_arguments, add_model_arguments, automask_settings_from_args, engine_from_args
from core.find.instances import FindSettings
from core.find.labels import LabelSettings
from core.find.run import find_in_image, instances_json, label_image, write_label_outputs
from core.io.images import load_image
from core.io.masks import box_to_mask, mask_to_png


def parse_box(text: str) -> list[float]:
    """"x0,y0,x1,y1" (XYXY, x1/y1 exclusive) -> four floats (ValueError with the reason otherwise)."""
    parts = [p for p in text.replace(" ", "").split(",") if p]
    if len(parts) != 4:
        raise ValueError(f"--like-box needs x0,y0,x1,y1, got {text!r}")
    return [float(p) for p in parts]


def run_find(args) -> int:
    """`python -m core find IMAGE PHRASE`: JSON {"phrase", "count", "instances": [...]} on stdout."""
    engine = engine_from_args(args)
    image = load_image(Path(args.image))
    like = None
    if args.like_box:
        like = box_to_mask(parse_box(args.like_box), image.shape[:2])
        if not like.any():
            raise ValueError("--like-box lies outside the image")
    found = find_in_image(engine, image, args.phrase, like_mask=like, automask=automask_settings_from_args(args),
                          settings=FindSettings(min_probability=args.min_probability))
    out = instances_json(found)
    out["models"], out["untrained"] = engine.label, engine.untrained
    if args.out:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        for i, mask in enumerate(found.masks):
            (folder / f"instance_{i + 1}.png").write_bytes(mask_to_png(mask))
        (folder / "find.json").write_text(json.dumps(out))
        print(f"wrote {found.count} mask(s) and find.json to {folder}", file=sys.stderr)
    print(json.dumps(out))
    return 0


def run_label(args) -> int:
    """`python -m core label IMAGE [--out DIR]`: a summary on stdout; with --out, the panoptic,
    semantic and instance files too."""
    engine = engine_from_args(args)
    image = load_image(Path(args.image))
    result = label_image(engine, image, args.vocab, automask=automask_settings_from_args(args),
                         settings=LabelSettings(min_score=args.min_score))
    files = write_label_outputs(args.out, result, Path(args.image).name, untrained=engine.untrained) if args.out else {}
    segments = result.panoptic.segments
    print(json.dumps({"image": Path(args.image).name, "vocabulary": len(result.labelling.vocabulary),
                      "candidates": len(result.labelling.labels), "instances": len(result.instances.names),
                      "segments": len(segments), "models": engine.label, "untrained": engine.untrained,
                      "files": {k: str(v) for k, v in files.items()}}))
    return 0


def register(subparsers) -> None:
    """Add `find` and `label` to `python -m core`."""
    p = subparsers.add_parser("find", help="every instance of a phrase (or like an example box) as JSON",
                              description='Finds every instance of PHRASE ("dogs", "the cups on the left") '
                                          "among SAM's automatic masks, decided with CLIP against a "
                                          "background vocabulary; --like-box finds objects like the one in a box.")
    p.add_argument("image")
    p.add_argument("phrase", nargs="?", default="", help="what to find (may be empty with --like-box)")
    p.add_argument("--like-box", help="x0,y0,x1,y1 (pixels, x1/y1 exclusive): find objects like the object in this box")
    p.add_argument("--min-probability", type=float, default=FindSettings().min_probability,
                   help="P(phrase) against the competing vocabulary an instance needs (default: %(default)s)")
    p.add_argument("--out", help="folder for instance_N.png masks and find.json")
    add_automask_arguments(p)
    add_model_arguments(p)
    p.set_defaults(func=run_find)

    p = subparsers.add_parser("label", help="label everything: semantic, instance and panoptic outputs",
                              description="Labels every SAM candidate with CLIP from a vocabulary and writes "
                                          "panoptic.png/.json (COCO panoptic), semantic.png/.json and "
                                          "instances.json (COCO) into --out, and prints a summary.")
    p.add_argument("image")
    p.add_argument("--vocab", default="coco-panoptic",
                   help='coco-panoptic (default), a file of words, "cat, dog, sofa", or a sentence (its nouns)')
    p.add_argument("--min-score", type=float, default=LabelSettings().min_score,
                   help="a candidate whose best label probability is lower stays unlabelled (default: %(default)s)")
    p.add_argument("--out", help="folder for the output files (without it: the summary only)")
    add_automask_arguments(p)
    add_model_arguments(p)
    p.set_defaults(func=run_label)
