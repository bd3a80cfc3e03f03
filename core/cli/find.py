"""Subcommands `find IMAGE PHRASE` (every instance) and `label IMAGE --out DIR` (semantic,
instance and panoptic outputs) over core.find."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from core.cli.args import add_automask_arguments, add_model_arguments, automask_settings_from_args, engine_from_args
from core.dataset.folder import examples_from_file, label_folder, local_runner
from core.dataset.propose import LabelJob, example_features
from core.dataset.ray_label import ray_label_runner
from core.find.instances import FindSettings
from core.find.labels import LabelSettings
from core.find.run import find_in_image, instances_json, label_image, write_label_outputs
from core.gallery.ray_runner import ray_available
from core.io.formats import parse_formats
from core.io.images import load_image
from core.io.labels import ExportMeta
from core.io.masks import box_to_mask, mask_to_png


def parse_box(text: str) -> list[float]:
    """"x1,y1,x2,y2" -> four floats (ValueError with the reason otherwise)."""
    parts = [p for p in text.replace(" ", "").split(",") if p]
    if len(parts) != 4:
        raise ValueError(f"--like-box needs x1,y1,x2,y2, got {text!r}")
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
    """`python -m core label IMAGE --out DIR`: panoptic, semantic and instance files; a summary on stdout.
    With a FOLDER: the set labelled into --out in --format (see `run_label_folder`)."""
    if Path(args.image).is_dir():
        return run_label_folder(args)
    if args.find or args.like or args.ray is not None or args.format:
        raise ValueError("--find, --like, --format and --ray label a FOLDER; for one image use `find` or --vocab")
    engine = engine_from_args(args)
    image = load_image(Path(args.image))
    result = label_image(engine, image, args.vocab, automask=automask_settings_from_args(args),
                         settings=LabelSettings(min_score=args.min_score))
    files = write_label_outputs(args.out, result, Path(args.image).name, untrained=engine.untrained)
    segments = result.panoptic.segments
    print(json.dumps({"image": Path(args.image).name, "vocabulary": len(result.labelling.vocabulary),
                      "candidates": len(result.labelling.labels), "instances": len(result.instances.names),
                      "segments": len(segments), "models": engine.label, "untrained": engine.untrained,
                      "files": {k: str(v) for k, v in files.items()}}))
    return 0


def run_label_folder(args) -> int:
    """`python -m core label FOLDER --out DIR [--vocab] [--find] [--like] [--format] [--ray]`:
    resumable, a progress bar on stderr, failures listed; a JSON summary on stdout."""
    formats = parse_formats(args.format or "coco")
    vocab = args.vocab if args.vocab or args.find or args.like else "coco-panoptic"
    automask = automask_settings_from_args(args)
    job = LabelJob(phrase=args.find, vocabulary=vocab, automask=automask,
                   find=FindSettings(min_probability=args.min_probability),
                   label=LabelSettings(min_score=args.min_score))
    engine = engine_from_args(args)
    if args.like:
        examples = examples_from_file(Path(args.like), Path(args.image))
        job = LabelJob(**{**job.__dict__, "examples": example_features(engine.embedder, examples, job.grounding)})
    if args.ray is not None:
        if reason := ray_available():
            raise RuntimeError(f"--ray: {reason}")
        runner = ray_label_runner(engine.settings, Path(args.image), job, address=args.ray,
                                  workers=args.ray_workers, num_cpus=args.ray_cpus)
    else:
        runner = local_runner(engine, Path(args.image), job)
    bar = _progress_bar()
    run = label_folder(args.image, args.out, job, runner, formats=formats,
                       meta=ExportMeta(models=engine.label, untrained=engine.untrained), progress=bar)
    bar.close()
    for name, reason in run.failures:
        print(f"skipped {name}: {reason}", file=sys.stderr)
    print(json.dumps({"folder": str(args.image), "images": run.images, "computed": run.computed,
                      "resumed": run.resumed, "failed": len(run.failures), "categories": job.categories()[:50],
                      "models": engine.label, "untrained": engine.untrained,
                      "files": {k: [str(p) for p in v[:3]] + (["..."] if len(v) > 3 else []) for k, v in run.files.items()}}))
    return 0


class _progress_bar:
    """A tqdm bar on stderr driven by `label_folder`'s progress(done, total, name)."""

    def __init__(self):
        self.bar = None

    def __call__(self, done: int, total: int, name: str) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, initial=done, unit="image", file=sys.stderr, dynamic_ncols=True)
        else:
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix_str(name[-30:])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def register(subparsers) -> None:
    """Add `find` and `label` to `python -m core`."""
    p = subparsers.add_parser("find", help="every instance of a phrase (or like an example box) as JSON",
                              description='Finds every instance of PHRASE ("dogs", "the cups on the left") '
                                          "among SAM's automatic masks, decided with CLIP against a "
                                          "background vocabulary; --like-box finds objects like the one in a box.")
    p.add_argument("image")
    p.add_argument("phrase", nargs="?", default="", help="what to find (may be empty with --like-box)")
    p.add_argument("--like-box", help="x1,y1,x2,y2: find objects like the object in this box")
    p.add_argument("--min-probability", type=float, default=FindSettings().min_probability,
                   help="P(phrase) against the competing vocabulary an instance needs (default: %(default)s)")
    p.add_argument("--out", help="folder for instance_N.png masks and find.json")
    add_automask_arguments(p)
    add_model_arguments(p)
    p.set_defaults(func=run_find)

    p = subparsers.add_parser("label", help="label everything in an image (or a folder: a dataset)",
                              description="IMAGE: labels every SAM candidate with CLIP from a vocabulary and writes "
                                          "panoptic.png/.json (COCO panoptic), semantic.png/.json and "
                                          "instances.json (COCO) into --out. FOLDER: proposals for every image "
                                          "(--find, --like, --vocab; one SAM and one CLIP pass per image), "
                                          "resumable, written in each --format into --out.")
    p.add_argument("image", help="an image, or a folder of images (searched recursively)")
    p.add_argument("--vocab", default=None,
                   help='coco-panoptic (the default when nothing else is asked), a file of words, "cat, dog, sofa", '
                        "or a sentence (its nouns)")
    p.add_argument("--find", default=None, help='FOLDER: every instance of a phrase in each image ("dogs")')
    p.add_argument("--like", default=None, metavar="EXAMPLES.json",
                   help="FOLDER: objects like these examples (COCO or LabelMe JSON, or a YOLO folder; "
                        "images beside it or in FOLDER), named by their classes")
    p.add_argument("--format", default=None,
                   help="FOLDER: comma list of coco, coco-polygons, panoptic, semantic, voc, yolo, labelme "
                        "(default coco)")
    p.add_argument("--min-probability", type=float, default=FindSettings().min_probability,
                   help="--find: P(phrase) an instance needs (default: %(default)s)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="FOLDER: run on Ray Data (a local Ray, or the cluster at ADDRESS; pip install 'ray[data]')")
    p.add_argument("--ray-workers", type=int, default=1, help="actors on Ray, each loading the models once")
    p.add_argument("--ray-cpus", type=int, default=None, help="CPUs of a local Ray (default: all)")
    p.add_argument("--min-score", type=float, default=LabelSettings().min_score,
                   help="a candidate whose best label probability is lower stays unlabelled (default: %(default)s)")
    p.add_argument("--out", required=True, help="folder for the output files")
    add_automask_arguments(p)
    add_model_arguments(p)
    p.set_defaults(func=run_label)
