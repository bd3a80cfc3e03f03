"""The round-trip table of the formats: a labelled set exported in each format, read back with
that format's usual reader, mask IoU per object.

    python -m core.io.formats.roundtrip ../shared/data/coco128/instances.json [--images 128]

Objects are COCO's ground-truth masks (crowd ones skipped); the pixel-map formats (panoptic,
semantic, VOC) keep one object per pixel, so they are compared with the visible part of each
object (the painter's order the writers use). Readers: pycocotools (COCO), PIL + json
(panoptic, VOC), supervision's DetectionDataset.from_yolo (YOLO), PIL's polygon fill as
labelme's shape_to_mask does (LabelMe).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from core.io.coco import annotation_mask, read_coco
from core.io.formats import export_set
from core.io.labels import LabelledImage, LabelledObject
from core.io.masks import mask_iou
from core.io.panoptic import rgb_to_ids


def coco_set(path: Path, limit: int) -> tuple[list[LabelledImage], list[str]]:
    """The first `limit` images of a COCO file with their non-crowd objects."""
    data = read_coco(path)
    images = []
    for image_id in sorted(data.images)[:limit]:
        entry = data.images[image_id]
        h, w = int(entry["height"]), int(entry["width"])
        objects = [LabelledObject(annotation_mask(a, h, w), data.category_of(a))
                   for a in data.annotations(image_id) if not a.get("iscrowd")]
        images.append(LabelledImage(entry["file_name"], h, w, [o for o in objects if o.mask.any()]))
    return images, sorted(set(data.categories.values()))


def visible(image: LabelledImage) -> list[np.ndarray]:
    """Each object's pixels left after later objects are painted over it."""
    owner = np.full((image.height, image.width), -1)
    for i, obj in enumerate(image.objects):
        owner[obj.mask] = i
    return [owner == i for i in range(len(image.objects))]


def _coco(out: Path, images, name: str) -> list[float]:
    from pycocotools.coco import COCO

    coco = COCO(str(out / name))
    ious = []
    for image_id, image in zip(sorted(coco.getImgIds()), images):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        ious += [mask_iou(coco.annToMask(a).astype(bool), o.mask) for a, o in zip(anns, image.objects)]
    return ious


def _panoptic(out: Path, images) -> list[float]:
    doc = json.loads((out / "panoptic.json").read_text())
    ious = []
    for ann, image in zip(doc["annotations"], images):
        ids = rgb_to_ids(np.asarray(Image.open(out / "panoptic" / ann["file_name"]).convert("RGB")))
        segs = {s["id"]: s for s in ann["segments_info"]}
        ious += [mask_iou(ids == i + 1, v) if (i + 1) in segs else 0.0
                 for i, v in enumerate(visible(image)) if v.any()]
    return ious


def _voc(out: Path, images) -> list[float]:
    ious = []
    for name, image in zip((out / "voc/ImageSets/Segmentation/train.txt").read_text().split(), images):
        inst = np.asarray(Image.open(out / "voc/SegmentationObject" / f"{name}.png"))
        ious += [mask_iou(inst == i + 1, v) for i, v in enumerate(visible(image)) if v.any()]
    return ious


def _yolo(out: Path, images) -> list[float]:
    import supervision as sv

    root = out / "yolo"
    data = sv.DetectionDataset.from_yolo(str(root / "images/train"), str(root / "labels/train"),
                                         str(root / "data.yaml"))
    by_name = {Path(p).name: d for p, _, d in data}
    ious = []
    for image in images:
        det = by_name[Path(image.file_name).name]
        if not image.objects:
            continue
        ious += [mask_iou(m, o.mask) for m, o in zip(det.mask, image.objects)]
    return ious


def _labelme(out: Path, images) -> list[float]:
    ious = []
    for image in images:
        doc = json.loads((out / "labelme" / f"{Path(image.file_name).stem}.json").read_text())
        masks: dict = {}
        for n, shape in enumerate(doc["shapes"]):
            pil = Image.new("L", (image.width, image.height), 0)
            ImageDraw.Draw(pil).polygon([tuple(p) for p in shape["points"]], outline=1, fill=1)
            key = shape["group_id"] if shape["group_id"] is not None else f"s{n}"
            masks[key] = masks.get(key, False) | (np.asarray(pil) > 0)
        ious += [mask_iou(m, o.mask) for m, o in zip(masks.values(), image.objects)]
    return ious


def table(images, categories, image_root: Path | None) -> list[tuple[str, str, int, float, float, float]]:
    """(format, reader, objects, mean IoU, min IoU, share >= 0.98) per format."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        export_set(out, images, categories, "coco,coco-polygons,panoptic,voc,yolo,labelme", image_root=image_root)
        rows = [("coco (RLE)", "pycocotools", _coco(out, images, "instances.json")),
                ("coco (polygons)", "pycocotools", _coco(out, images, "instances_polygons.json")),
                ("coco panoptic", "PIL + json", _panoptic(out, images)),
                ("pascal voc", "PIL (SegmentationObject)", _voc(out, images)),
                ("yolo-seg", "supervision from_yolo", _yolo(out, images)),
                ("labelme", "PIL polygon (labelme)", _labelme(out, images))]
    return [(f, r, len(v), float(np.mean(v)), float(np.min(v)), float(np.mean(np.array(v) >= 0.98)))
            for f, r, v in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("instances", type=Path)
    parser.add_argument("--images", type=int, default=128)
    args = parser.parse_args(argv)
    images, categories = coco_set(args.instances, args.images)
    root = args.instances.parent / "images"
    print("| format | read back with | objects | mean IoU | min IoU | IoU >= 0.98 |\n|---|---|---|---|---|---|")
    for f, r, n, mean, low, share in table(images, categories, root if root.is_dir() else None):
        print(f"| {f} | {r} | {n} | {mean:.4f} | {low:.4f} | {share:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
