"""COCO instances for a set: one JSON, masks as compressed RLE (exact) or polygons (pixel-edge
outlines, holes dropped); read back with pycocotools or `read_coco_set`.

Category ids are 1..N in the given order; image ids 1..M in list order. Each annotation keeps
the object list's fields as extra keys COCO readers ignore: score (when a model proposed
it), origin, reviewed, hidden.
"""
from __future__ import annotations

import json
from pathlib import Path

from core.io.coco import annotation_mask, coco_annotation, read_coco
from core.io.formats.common import category_ids, meta_dict
from core.io.formats.polygons import mask_to_polygons
from core.io.labels import ORIGINS, ExportMeta, LabelledImage, LabelledObject


def object_extras(obj: LabelledObject) -> dict:
    """The object-list fields kept in an annotation."""
    extra = {"origin": obj.origin, "reviewed": bool(obj.reviewed), "hidden": bool(obj.hidden)}
    if obj.score is not None:
        extra["score"] = round(float(obj.score), 6)
    if obj.margin is not None:
        extra["margin"] = round(float(obj.margin), 6)
    return extra


def coco_set_document(images: list[LabelledImage], categories: list[str], *, polygons: bool = False,
                      meta: ExportMeta | None = None) -> dict:
    """The COCO instances dict of a set (see the module docstring)."""
    ids = category_ids(categories)
    info = meta_dict(meta)
    doc = {"info": {"description": info["description"], "version": "1.0"}, "images": [], "annotations": [],
           "categories": [{"id": ids[n], "name": n, "supercategory": n} for n in categories], **info}
    ann_id = 0
    for image_id, image in enumerate(images, start=1):
        doc["images"].append({"id": image_id, "file_name": image.file_name, "height": image.height,
                              "width": image.width})
        for obj in image.objects:
            ann_id += 1
            ann = coco_annotation(obj.mask, ann_id, image_id, ids[obj.category], **object_extras(obj))
            if polygons:
                ann["segmentation"] = [[round(float(v), 2) for v in p.ravel()]
                                       for p in mask_to_polygons(obj.mask, corners=True)]
            doc["annotations"].append(ann)
    return doc


def write_coco(out_dir: Path, images: list[LabelledImage], categories: list[str], *, polygons: bool = False,
               meta: ExportMeta | None = None, image_root: Path | None = None) -> list[Path]:
    """Write out_dir/instances.json (out_dir/instances_polygons.json with `polygons`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ("instances_polygons.json" if polygons else "instances.json")
    path.write_text(json.dumps(coco_set_document(images, categories, polygons=polygons, meta=meta)))
    return [path]


def read_coco_set(path: Path) -> tuple[list[LabelledImage], list[str]]:
    """A COCO instances file as LabelledImages (file order) and the category names (by id).
    Crowd annotations are read as objects too; a missing class name is refused."""
    data = read_coco(path)
    categories = [data.categories[k] for k in sorted(data.categories)]
    images = []
    for image_id, entry in data.images.items():
        height, width = int(entry["height"]), int(entry["width"])
        objects = []
        for ann in data.annotations(image_id):
            if int(ann["category_id"]) not in data.categories:
                raise ValueError(f"annotation {ann.get('id')} has an unknown category {ann['category_id']}")
            score, margin = ann.get("score"), ann.get("margin")
            objects.append(LabelledObject(
                mask=annotation_mask(ann, height, width), category=data.category_of(ann),
                score=None if score is None else float(score), origin=ann.get("origin") if ann.get("origin") in ORIGINS else "user",
                reviewed=bool(ann.get("reviewed", True)), hidden=bool(ann.get("hidden", False)),
                margin=None if margin is None else float(margin)))
        images.append(LabelledImage(entry["file_name"], height, width, objects))
    return images, categories
