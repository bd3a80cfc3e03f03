"""Subcommands on images and galleries: segment, index, search, fetch-weights."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from core import config
from core.automask import AutoMaskSettings
from core.build import build_gallery_from_coco, build_gallery_from_images
from core.cli.args import add_model_arguments, engine_from_args, print_json
from core.gallery import METRICS, Gallery
from core.images import load_image
from core.masks import mask_to_png, mask_to_rle
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
    result = {"image": str(args.image), "size": list(image.shape[:2]), "untrained": engine.untrained,
              "model": engine.label, "masks": masks}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print_json(result)
    print(f"wrote {len(masks)} mask(s) to {out}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- index


def _tqdm_progress(desc: str):
    from tqdm import tqdm

    bar = tqdm(desc=desc, file=sys.stderr, unit="image")

    def progress(done: int, total: int, note: str) -> None:
        bar.total = total
        bar.update(done - bar.n)
        bar.set_postfix_str(note, refresh=False)

    return progress


def run_index(args) -> int:
    engine = engine_from_args(args)
    progress = _tqdm_progress("indexing")
    if args.coco:
        gallery = build_gallery_from_coco(args.coco, args.images, engine.segmenter, engine.embedder,
                                          view=args.view, metric=args.metric, limit=args.limit,
                                          categories=args.categories, oracle_masks=args.oracle_masks,
                                          progress=progress)
    else:
        automask = AutoMaskSettings(points_per_side=args.points_per_side)
        if args.untrained:  # random weights predict low scores: keep every candidate
            automask = AutoMaskSettings(points_per_side=args.points_per_side, pred_iou_thresh=0.0,
                                        stability_score_thresh=0.0)
        gallery = build_gallery_from_images(args.images, engine.segmenter, engine.embedder, view=args.view,
                                            metric=args.metric, max_objects=args.max_objects,
                                            progress=progress, automask=automask)
    gallery.save(args.out)
    summary = {"gallery": str(args.out), "objects": len(gallery), **gallery.meta()}
    print_json(summary)
    print(f"indexed {len(gallery)} objects into {args.out}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- search


def run_search(args) -> int:
    if (args.text is None) == (args.image is None):
        raise ValueError("give exactly one query: --text TEXT or --image IMAGE with --box/--point")
    engine = engine_from_args(args)
    embedder = engine.embedder
    gallery = Gallery.load(args.gallery, expect_model=embedder.model_info)
    if args.text is not None:
        if not args.text.strip():
            raise ValueError("the text query is empty")
        query = embedder.embed_texts([args.text])
    else:
        query = _embed_image_query(args, engine, gallery.view)
    hits = gallery.search(query, k=args.k)[0]
    for hit in hits:
        print(json.dumps({**hit.to_json(), "metric": gallery.metric, "untrained": engine.untrained}))
    print(f"{len(hits)} hit(s) from {len(gallery)} objects ({gallery.metric}, view {gallery.view})",
          file=sys.stderr)
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

    p = sub.add_parser("index", help="build an object gallery from images or a COCO file")
    p.add_argument("--images", required=True, help="folder of images")
    p.add_argument("--coco", help="COCO instances JSON: annotation boxes prompt SAM")
    p.add_argument("--oracle-masks", action="store_true", help="with --coco: ground-truth masks instead of SAM")
    p.add_argument("--categories", nargs="+", help="with --coco: only these category names")
    p.add_argument("--limit", type=int, help="with --coco: at most this many images")
    p.add_argument("--view", default="crop", choices=VIEW_NAMES)
    p.add_argument("--metric", default="cosine", choices=METRICS)
    p.add_argument("--max-objects", type=int, default=20, help="automatic masks kept per image")
    p.add_argument("--points-per-side", type=int, default=16, help="automatic mask grid")
    p.add_argument("--out", required=True, help="gallery folder")
    add_model_arguments(p)
    p.set_defaults(func=run_index)

    p = sub.add_parser("search", help="nearest objects in a gallery for an object or a text")
    p.add_argument("gallery")
    p.add_argument("--text", help="text query, e.g. 'a dog'")
    p.add_argument("--image", help="image query; with --box/--point the object, else the whole image")
    add_prompt_arguments(p)
    p.add_argument("-k", type=int, default=5, help="number of hits")
    add_model_arguments(p)
    p.set_defaults(func=run_search)

    p = sub.add_parser("fetch-weights", help="download SAM and CLIP weights into the cache "
                                             f"({config.CACHE_DIR})")
    p.add_argument("--sam", default=config.SAM_MODEL)
    p.add_argument("--clip", default=config.CLIP_MODEL)
    p.add_argument("--pretrained", default=config.CLIP_PRETRAINED)
    p.set_defaults(func=run_fetch_weights)
