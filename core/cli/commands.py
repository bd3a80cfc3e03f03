"""Subcommands on images and galleries: segment, index, search, fetch-weights."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from core import config
from core.bench.timing import cpu_info
from core.gallery.browse import check_model, search_page
from core.cli.args import (add_model_arguments, automask_settings_from_args, engine_from_args,
                           engine_settings_from_args, print_json)
from core.gallery.ray_runner import ray_available, ray_runner
from core.gallery.gallery import METRICS, Gallery
from core.gallery.index import INDEX_KINDS, IndexSettings
from core.gallery.ingest import IngestSettings, coco_tasks, folder_tasks, ingest
from core.io.images import load_image
from core.io.masks import mask_to_png, mask_to_rle
from core.models import fetch_weights
from core.views import VIEW_NAMES, mask_to_box, render_view


def parse_box(text: str) -> np.ndarray:
    """"X0,Y0,X1,Y1" -> (4,) float32 XYXY."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"a box is X0,Y0,X1,Y1 (four numbers), not {text!r}")
    return np.array(values, dtype=np.float32)


def parse_point(text: str) -> tuple[float, float, int]:
    """"X,Y" or "X,Y:1" (positive) / "X,Y:0" (negative) -> (x, y, label)."""
    coords, _, label = text.partition(":")
    try:
        x, y = (float(v) for v in coords.split(","))
        lab = int(label) if label else 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"a point is X,Y or X,Y:0|1, not {text!r}") from None
    if lab not in (0, 1):
        raise argparse.ArgumentTypeError(f"a point label is 0 (negative) or 1 (positive), not {lab}")
    return x, y, lab


def add_prompt_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--box", type=parse_box, help="box prompt X0,Y0,X1,Y1 in pixels")
    parser.add_argument("--point", type=parse_point, action="append", default=[],
                        help="point prompt X,Y[:1|0] (1 positive, default; 0 negative); repeatable")


def prompts_of(args) -> tuple[np.ndarray | None, np.ndarray | None]:
    if not args.point:
        return None, None
    arr = np.array(args.point, dtype=np.float32)
    return arr[:, :2], arr[:, 2].astype(np.int64)


# ----------------------------------------------------------------------------- segment


def run_segment(args) -> int:
    image = load_image(args.image)
    points, labels = prompts_of(args)
    engine = engine_from_args(args)
    emb = engine.segmenter.set_image(image)
    pred = engine.segmenter.predict(emb, points, labels, args.box,
                                    multimask=True if args.multimask else None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    masks = []
    for i, (mask, score) in enumerate(zip(pred.masks, pred.scores)):
        (out / f"mask_{i}.png").write_bytes(mask_to_png(mask))
        masks.append({"file": str(out / f"mask_{i}.png"), "score": float(score),
                      "area": int(mask.sum()),
                      "box": [float(v) for v in mask_to_box(mask)] if mask.any() else None,
                      "rle": mask_to_rle(mask)})
    encoder_s = engine.segmenter.encode_seconds
    result = {"image": str(args.image), "size": list(image.shape[:2]), "untrained": engine.untrained,
              "model": engine.label, "encoder_s": encoder_s, "masks": masks}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print_json(result)
    print(f"wrote {len(masks)} mask(s) to {out}", file=sys.stderr)
    if encoder_s is not None:
        print(f"SAM {engine.settings.sam}: image encoder {encoder_s:.2f} s on this machine "
              f"({cpu_info().describe()})", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- index


def _positive(name: str, value, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")


def check_output_folder(path: Path) -> None:
    """ValueError unless `path` is (or can become) a writable folder; checked before any work."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} is a file, not a folder")
    parent = path if path.exists() else next((p for p in path.parents if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {path}: cannot write in {parent}")


def index_settings_from_args(args) -> IngestSettings:
    """IngestSettings of the `index` flags (ValueError for a bad value)."""
    automask = automask_settings_from_args(args)   # --untrained keeps every candidate
    index = IndexSettings(kind=args.index, memory_budget_mb=args.memory_budget_mb,
                          recall_target=args.recall_target, opq=args.opq)
    return IngestSettings(view=args.view, metric=args.metric, max_objects=args.max_objects, automask=automask,
                          oracle_masks=args.oracle_masks, checkpoint_images=args.checkpoint_every,
                          clip_batch=args.clip_batch, workers=args.workers, index=index,
                          thumbnails=not args.no_thumbnails)


def validate_index_args(args):
    """Every argument, path and setting of `index`, checked before models or images load.
    Returns (tasks, source, settings)."""
    _positive("--limit", args.limit)
    _positive("--max-objects", args.max_objects)
    _positive("--points-per-side", args.points_per_side)
    _positive("--checkpoint-every", args.checkpoint_every)
    _positive("--clip-batch", args.clip_batch)
    _positive("--workers", args.workers, 0)
    _positive("--ray-workers", args.ray_workers)
    if not args.coco and (args.oracle_masks or args.categories):
        raise ValueError("--oracle-masks and --categories need --coco")
    if args.append and args.overwrite:
        raise ValueError("give --append or --overwrite, not both")
    images = Path(args.images)
    if not images.is_dir():
        raise FileNotFoundError(f"--images {images}: no such folder")
    out = Path(args.out)
    check_output_folder(out)
    settings = index_settings_from_args(args)
    if args.coco:
        if not Path(args.coco).is_file():
            raise FileNotFoundError(f"--coco {args.coco}: no such file")
        tasks, source = coco_tasks(args.coco, images, limit=args.limit, categories=args.categories), "coco"
    else:
        tasks, source = folder_tasks(images, recursive=args.recursive, limit=args.limit), "folder"
    if args.ray is not None and (reason := ray_available()):
        raise RuntimeError(f"--ray: {reason}")
    if (out / "CURRENT").is_file() or (out / "manifest.json").is_file():
        Gallery.load(out, expect_view=settings.view if args.append else None,
                     expect_metric=settings.metric if args.append else None, verify=False)
        if not (args.append or args.overwrite or (out / "ingest" / "settings.json").is_file()):
            raise ValueError(f"{out} already holds a gallery: pass --append to add to it or --overwrite to replace it")
    return tasks, source, settings


def _progress_printer():
    last = [0.0]

    def show(p) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0 or p.note or p.done == p.total:
            last[0] = now
            print(f"indexing: {p.line()}", file=sys.stderr, flush=True)

    return show


def run_index(args) -> int:
    tasks, source, settings = validate_index_args(args)
    engine = engine_from_args(args)
    runner = None
    if args.ray is not None:
        runner = ray_runner(engine_settings_from_args(args), address=args.ray, workers=args.ray_workers,
                            num_cpus=args.ray_cpus)
    report = ingest(args.out, tasks, engine, settings, source=source, append=args.append, overwrite=args.overwrite,
                    discard_pending=args.discard_pending, progress=_progress_printer(), runner=runner)
    print_json({**report.to_json(), "objects": report.objects_total, "view": settings.view,
                "metric": settings.metric, "dim": engine.embedder.dim})
    if report.images_new == 0 and report.images_unreadable == 0:
        print(f"nothing new: all {report.images_skipped} image(s) were already in {args.out} "
              f"({report.objects_total} objects)", file=sys.stderr)
    else:
        print(f"indexed {report.objects_added} objects from {report.images_new} new image(s) into {args.out} "
              f"({report.objects_total} in all, index {report.index['factory']}); "
              f"{report.images_per_s:.2f} images/s, {report.objects_per_s:.1f} objects/s", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- search


def run_search(args) -> int:
    if (args.text is None) == (args.image is None):
        raise ValueError("give exactly one query: --text TEXT or --image IMAGE with --box/--point")
    _positive("-k", args.k)
    _positive("--offset", args.offset, 0)
    if args.text is not None and not args.text.strip():
        raise ValueError("the text query is empty")
    if args.image is not None and not Path(args.image).is_file():
        raise FileNotFoundError(f"--image {args.image}: no such image file")
    gallery = Gallery.load(args.gallery)  # before the models: a bad gallery fails fast
    engine = engine_from_args(args)
    embedder = engine.embedder
    check_model(gallery, embedder.model_info, args.gallery)
    if args.text is not None:
        query = embedder.embed_texts([args.text])
    else:
        query = _embed_image_query(args, engine, gallery.view)
    page = search_page(gallery, query[0], offset=args.offset, limit=args.k)
    for hit in page.hits:
        print(json.dumps({**hit.to_json(), "metric": gallery.metric, "untrained": engine.untrained}))
    print(f"{len(page.hits)} hit(s) from {len(gallery)} objects ({gallery.metric}, view {gallery.view}, "
          f"index {gallery.spec.factory})", file=sys.stderr)
    return 0


def _embed_image_query(args, engine, view: str) -> np.ndarray:
    image = load_image(args.image)
    points, labels = prompts_of(args)
    if points is None and args.box is None:
        mask = np.ones(image.shape[:2], dtype=bool)  # the whole image is the object
    else:
        emb = engine.segmenter.set_image(image)
        mask = engine.segmenter.predict(emb, points, labels, args.box).masks[0]
        if not mask.any():
            raise ValueError("SAM found no object for this prompt; try another point or box")
    return engine.embedder.embed_images([render_view(view, image, mask)])


def run_fetch_weights(args) -> int:
    print_json(fetch_weights(args.sam, args.clip, args.pretrained))
    return 0


# ----------------------------------------------------------------------------- parsers


def register(sub) -> None:
    p = sub.add_parser("segment", help="segment one object from point/box prompts",
                       description="Masks as PNG + result.json (scores, boxes, COCO RLE) in --out.")
    p.add_argument("image")
    add_prompt_arguments(p)
    p.add_argument("--multimask", action="store_true", help="always return 3 candidate masks")
    p.add_argument("--out", required=True, help="output folder")
    add_model_arguments(p)
    p.set_defaults(func=run_segment)

    p = sub.add_parser("index", help="build or extend an object gallery from images or a COCO file",
                       description="Incremental and resumable: images already in the gallery (by content) "
                                   "are skipped; work is committed in checkpoints, and the same command "
                                   "after an interruption goes on where it stopped.")
    p.add_argument("--images", required=True, help="folder of images")
    p.add_argument("--recursive", action="store_true", help="also images in sub-folders")
    p.add_argument("--coco", help="COCO instances JSON: annotation boxes prompt SAM")
    p.add_argument("--oracle-masks", action="store_true", help="with --coco: ground-truth masks instead of SAM")
    p.add_argument("--categories", nargs="+", help="with --coco: only these category names")
    p.add_argument("--limit", type=int, help="at most this many images (>= 1)")
    p.add_argument("--view", default="crop", choices=VIEW_NAMES)
    p.add_argument("--metric", default="cosine", choices=METRICS)
    p.add_argument("--max-objects", type=int, default=20, help="automatic masks kept per image")
    p.add_argument("--points-per-side", type=int, default=16, help="automatic mask grid")
    p.add_argument("--out", required=True, help="gallery folder")
    p.add_argument("--no-thumbnails", action="store_true",
                   help="write no object thumbnails (<out>/thumbs/, ~2.5 KB each); the app then draws hits from "
                        "their source images")
    g = p.add_argument_group("adding, resuming, parallelism")
    g.add_argument("--append", action="store_true", help="add to the gallery in --out (known images are skipped)")
    g.add_argument("--overwrite", action="store_true", help="replace the gallery in --out")
    g.add_argument("--discard-pending", action="store_true", help="drop unfinished work of an interrupted run")
    g.add_argument("--checkpoint-every", type=int, default=32, help="commit after this many images (default 32)")
    g.add_argument("--clip-batch", type=int, default=32, help="object images per CLIP batch, across images")
    g.add_argument("--workers", type=int, default=0,
                   help="processes reading and decoding images (0 = in this process)")
    g.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run on Ray Data: a cluster ADDRESS ('auto' = the running one) or a local Ray "
                        "(needs pip install 'ray[data]')")
    g.add_argument("--ray-workers", type=int, default=1, help="SAM and CLIP actors on Ray (default 1 each)")
    g.add_argument("--ray-cpus", type=int, default=None, help="CPUs of a local Ray (default: all)")
    g = p.add_argument_group("index (chosen by size: exact, HNSW, IVF, IVF-PQ + re-ranking)")
    g.add_argument("--index", default="auto", choices=INDEX_KINDS, help="index type (default: by size)")
    g.add_argument("--memory-budget-mb", type=float, default=1024.0, help="index memory budget (default 1024)")
    g.add_argument("--recall-target", type=float, default=0.95, help="recall@10 the search parameters are tuned to")
    g.add_argument("--opq", action="store_true", help="OPQ rotation for the compressed index")
    add_model_arguments(p)
    p.set_defaults(func=run_index)

    p = sub.add_parser("search", help="nearest objects in a gallery for an object or a text")
    p.add_argument("gallery")
    p.add_argument("--text", help="text query, e.g. 'a dog'")
    p.add_argument("--image", help="image query; with --box/--point the object, else the whole image")
    add_prompt_arguments(p)
    p.add_argument("-k", type=int, default=5, help="number of hits (a page)")
    p.add_argument("--offset", type=int, default=0, help="skip this many hits (paging)")
    add_model_arguments(p)
    p.set_defaults(func=run_search)

    p = sub.add_parser("fetch-weights", help="download SAM and CLIP weights into the cache "
                                             f"({config.CACHE_DIR})")
    p.add_argument("--sam", default=None, help="SAM model (default: $SAMCLIP_SAM_MODEL, else vit_t on a CPU, "
                                               "vit_b on a GPU)")
    p.add_argument("--clip", default=config.CLIP_MODEL)
    p.add_argument("--pretrained", default=config.CLIP_PRETRAINED)
    p.set_defaults(func=run_fetch_weights)
