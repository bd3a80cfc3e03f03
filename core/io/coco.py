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

from core.io.masks import box_to_mask, coco_ann_to_mask, coco_box_to_xyxy

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
