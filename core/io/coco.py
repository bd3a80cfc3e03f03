"""The one reader of COCO instance files (images, categories, annotations).

Used by gallery building, the retrieval evaluation and the referring-expression data readers.
Conventions: COCO boxes are [x, y, w, h] pixels; converted boxes are XYXY float32
(`core.io.masks.coco_box_to_xyxy`); masks (H, W) bool.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.io.masks import box_to_mask, coco_ann_to_mask, coco_box_to_xyxy, mask_to_rle

REQUIRED_KEYS = ("images", "annotations", "categories")


@dataclass
class CocoData:
    """A COCO instances file, indexed.

    raw: the parsed JSON; images: {image id: image entry}; categories: {category id: name};
    by_image: {image id: [annotation, ...]} in file order; path: where it was read from.
    """

    raw: dict
    images: dict[int, dict]
    categories: dict[int, str]
    by_image: dict[int, list[dict]] = field(repr=False)
    path: Path | None = None

    def annotations(self, image_id: int) -> list[dict]:
        """The annotations of one image ([] when it has none)."""
        return self.by_image.get(int(image_id), [])

    def category_of(self, ann: dict) -> str:
        """The category name of an annotation."""
        return self.categories[int(ann["category_id"])]


def index_coco(raw: dict, path: Path | None = None) -> CocoData:
    """Index parsed COCO JSON; ValueError naming what is missing or inconsistent."""
    missing = [key for key in REQUIRED_KEYS if key not in raw]
    if missing:
        where = f"{path} is" if path else "the data is"
        raise ValueError(f"{where} not a COCO instances file: missing {', '.join(missing)}")
    images = {int(im["id"]): im for im in raw["images"]}
    categories = {int(c["id"]): c["name"] for c in raw["categories"]}
    by_image: dict[int, list[dict]] = {}
    for ann in raw["annotations"]:
        if int(ann["image_id"]) not in images:
            raise ValueError(f"annotation {ann.get('id')} refers to unknown image {ann['image_id']}")
        by_image.setdefault(int(ann["image_id"]), []).append(ann)
    return CocoData(raw=raw, images=images, categories=categories, by_image=by_image, path=path)


def read_coco(path: str | Path) -> CocoData:
    """Read and index a COCO instances file; FileNotFoundError / ValueError with the reason."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file {path} does not exist")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path} is not a COCO instances file (not a JSON object)")
    return index_coco(raw, path)


def annotation_mask(ann: dict, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of a COCO-style dict: its ``segmentation``, else its ``bbox`` rectangle."""
    if ann.get("segmentation"):
        return coco_ann_to_mask(ann, height, width)
    if "bbox" not in ann:
        raise ValueError("an object needs a 'segmentation' (mask) or a 'bbox' [x, y, w, h]")
    return box_to_mask(coco_box_to_xyxy(ann["bbox"]), (height, width))


# ----------------------------------------------------------------------------- writing
def coco_annotation(mask: np.ndarray, ann_id: int, image_id: int = 1, category_id: int = 1, **extra) -> dict:
    """A COCO annotation dict (compressed RLE, bbox [x, y, w, h], area) for an (H, W) mask."""
    mask = np.asarray(mask, dtype=bool)
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if rows.size:
        bbox = [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])]
    else:
        bbox = [0.0, 0.0, 0.0, 0.0]
    return {"id": ann_id, "image_id": image_id, "category_id": int(category_id), "segmentation": mask_to_rle(mask),
            "area": int(mask.sum()), "bbox": bbox, "iscrowd": 0, **extra}


#: The one category of class-agnostic exports.
OBJECT_CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}


def coco_document(file_name: str, size: tuple[int, int], masks: list[np.ndarray],
                  extras: list[dict] | None = None, note: str = "", categories: list[dict] | None = None,
                  category_ids: list[int] | None = None) -> dict:
    """One COCO-format JSON document for one image: its objects as annotations with compressed
    RLE masks; class-agnostic (category 1 "object") unless `categories` ([{"id", "name",
    ...}]) and `category_ids` (one per mask) are given. Loads with pycocotools' COCO()."""
    extras = extras or [{} for _ in masks]
    ids = category_ids if category_ids is not None else [1] * len(masks)
    return {
        "info": {"description": note or "objects found with SAM", "version": "1.0"},
        "images": [{"id": 1, "file_name": file_name, "height": int(size[0]), "width": int(size[1])}],
        "annotations": [coco_annotation(m, i + 1, category_id=c, **e)
                        for i, (m, c, e) in enumerate(zip(masks, ids, extras))],
        "categories": categories if categories is not None else [OBJECT_CATEGORY],
    }
