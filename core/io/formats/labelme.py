"""LabelMe JSON, one file per image (labelme 5 layout: version, flags, shapes, imagePath,
imageData, imageHeight, imageWidth), with the image copied beside it when available.

Each object is a "polygon" shape per part (OpenCV contour through the boundary pixels'
centres, which labelme's PIL fill includes); the parts of one object share a group_id. The
object list's fields ride along: shape flags {"proposal", "reviewed", "hidden"} (labelme's
per-shape booleans) and a "score" key (labelme keeps unknown keys).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.io.formats.common import copy_image, meta_dict, suffix_of
from core.io.formats.polygons import mask_to_polygons, polygons_to_mask
from core.io.labels import ExportMeta, LabelledImage, LabelledObject, unique_stems

LABELME_VERSION = "5.5.0"


def labelme_document(image: LabelledImage, image_path: str, meta: ExportMeta | None = None) -> dict:
    """The LabelMe dict of one image."""
    shapes = []
    for index, obj in enumerate(image.objects, start=1):
        parts = mask_to_polygons(obj.mask, corners=False)
        for part in parts:
            if len(part) < 3:                               # labelme needs 3 points: a pixel or a line
                part = np.concatenate([part, part[::-1], part])[:3]
            shape = {"label": obj.category, "points": part.tolist(), "group_id": index if len(parts) > 1 else None,
                     "description": "", "shape_type": "polygon", "mask": None,
                     "flags": {"proposal": obj.origin == "proposal", "reviewed": bool(obj.reviewed),
                               "hidden": bool(obj.hidden)}}
            if obj.score is not None:
                shape["score"] = round(float(obj.score), 6)
            shapes.append(shape)
    return {"version": LABELME_VERSION, "flags": {}, "shapes": shapes, "imagePath": image_path, "imageData": None,
            "imageHeight": image.height, "imageWidth": image.width, **meta_dict(meta)}


def write_labelme(out_dir: Path, images: list[LabelledImage], categories: list[str], *,
                  meta: ExportMeta | None = None, image_root: Path | None = None) -> list[Path]:
    """out_dir/labelme/<stem>.json per image (+ <stem>.<ext>, the image, when `image_root` has it)."""
    root = Path(out_dir) / "labelme"
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for image, stem in zip(images, unique_stems(images)):
        image_name = f"{stem}{suffix_of(image.file_name)}"
        copy_image(image_root, image.file_name, root / image_name)
        path = root / f"{stem}.json"
        path.write_text(json.dumps(labelme_document(image, image_name, meta)))
        paths.append(path)
    return paths


def read_labelme(path: Path) -> LabelledImage:
    """One LabelMe JSON as a LabelledImage: shapes with one group_id make one object;
    polygon, rectangle and mask shapes are read, other kinds refused with their name."""
    path = Path(path)
    doc = json.loads(path.read_text())
    height, width = int(doc["imageHeight"]), int(doc["imageWidth"])
    groups: dict = {}
    for n, shape in enumerate(doc.get("shapes", [])):
        key = ("group", shape["group_id"], shape["label"]) if shape.get("group_id") is not None else ("shape", n)
        groups.setdefault(key, []).append(shape)
    objects = []
    for shapes in groups.values():
        mask = np.zeros((height, width), dtype=bool)
        for shape in shapes:
            mask |= _shape_mask(shape, height, width, path)
        first, flags = shapes[0], shapes[0].get("flags") or {}
        objects.append(LabelledObject(mask, str(first["label"]), score=first.get("score"),
                                      origin="proposal" if flags.get("proposal") else "user",
                                      reviewed=bool(flags.get("reviewed", True)), hidden=bool(flags.get("hidden", False))))
    return LabelledImage(str(doc.get("imagePath") or path.with_suffix(".jpg").name), height, width, objects)


def _shape_mask(shape: dict, height: int, width: int, where: Path) -> np.ndarray:
    kind = shape.get("shape_type") or "polygon"
    points = np.asarray(shape.get("points", []), dtype=np.float64).reshape(-1, 2)
    if kind == "polygon":
        return polygons_to_mask([points], height, width, corners=False)
    if kind == "rectangle" and len(points) == 2:
        (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
        return polygons_to_mask([[[x0, y0], [x1, y0], [x1, y1], [x0, y1]]], height, width, corners=False)
    if kind == "mask" and shape.get("mask"):
        return _mask_shape(shape, points, height, width)
    raise ValueError(f"{where}: a {kind!r} shape cannot be read as a mask")


def _mask_shape(shape: dict, points: np.ndarray, height: int, width: int) -> np.ndarray:
    """labelme's "mask" shape: a base64 PNG of the box points[0]..points[1]."""
    import base64
    import io

    from PIL import Image

    crop = np.asarray(Image.open(io.BytesIO(base64.b64decode(shape["mask"]))).convert("L")) > 0
    x0, y0 = (int(round(v)) for v in points[0])
    mask = np.zeros((height, width), dtype=bool)
    h, w = min(crop.shape[0], height - y0), min(crop.shape[1], width - x0)
    mask[y0:y0 + h, x0:x0 + w] = crop[:h, :w]
    return mask


def read_labelme_set(folder: Path) -> tuple[list[LabelledImage], list[str]]:
    """Every *.json of a folder (sorted) as LabelledImages, and the class names in first-seen order."""
    images = [read_labelme(p) for p in sorted(Path(folder).glob("*.json"))]
    names: list[str] = []
    for image in images:
        names += [o.category for o in image.objects if o.category not in names]
    return images, names
