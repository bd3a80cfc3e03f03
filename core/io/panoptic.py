"""COCO panoptic and semantic files: segment ids as RGB PNGs, the panoptic JSON, a semantic
PNG with its legend.

COCO panoptic format: a PNG per image whose pixel colour encodes the segment id
(id = R + 256 G + 256^2 B, 0 = void) and a JSON with, per image, `segments_info` (id,
category_id, area, bbox [x, y, w, h], iscrowd) and the categories (id, name, isthing).
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image


def ids_to_rgb(id_map: np.ndarray) -> np.ndarray:
    """(H, W) int segment ids -> (H, W, 3) uint8, id = R + 256 G + 256^2 B."""
    ids = np.asarray(id_map, dtype=np.int64)
    if ids.min(initial=0) < 0 or ids.max(initial=0) >= 256 ** 3:
        raise ValueError("segment ids must be in [0, 256^3)")
    return np.stack([ids % 256, ids // 256 % 256, ids // 256 ** 2], axis=-1).astype(np.uint8)


def rgb_to_ids(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) int64 segment ids (the inverse of `ids_to_rgb`)."""
    rgb = np.asarray(rgb, dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 ** 2 * rgb[..., 2]


def png_bytes(array: np.ndarray) -> bytes:
    """PNG of an (H, W, 3) uint8, (H, W) uint8 or (H, W) uint16 array."""
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def semantic_png(class_map: np.ndarray) -> bytes:
    """The class-id map as an 8-bit PNG (16-bit when an id exceeds 255); 0 = unlabelled."""
    ids = np.asarray(class_map)
    return png_bytes(ids.astype(np.uint8 if ids.max(initial=0) < 256 else np.uint16))


def category_entries(vocabulary) -> list[dict]:
    """COCO category dicts (id, name, isthing, supercategory) of a `core.find.vocab` vocabulary."""
    return [{"id": c.id, "name": c.name, "isthing": int(c.isthing), "supercategory": "thing" if c.isthing else "stuff"}
            for c in vocabulary]


def panoptic_document(file_name: str, size: tuple[int, int], png_name: str, segments, vocabulary,
                      image_id: int = 1) -> dict:
    """The COCO panoptic JSON for one image: `segments` (core.find.labels.Segment) -> segments_info."""
    info = [{"id": s.id, "category_id": s.category_id, "area": s.area, "bbox": list(s.bbox), "iscrowd": 0,
             "score": round(float(s.score), 6)} for s in segments]
    return {"info": {"description": "panoptic segmentation (SAM + CLIP labels)", "version": "1.0"},
            "images": [{"id": image_id, "file_name": file_name, "height": int(size[0]), "width": int(size[1])}],
            "annotations": [{"image_id": image_id, "file_name": png_name, "segments_info": info}],
            "categories": category_entries(vocabulary)}


def legend(vocabulary, class_map: np.ndarray | None = None) -> list[dict]:
    """[{"id", "name", "isthing"}] of the vocabulary (only the ids present in `class_map` when given)."""
    present = None if class_map is None else set(np.unique(class_map).tolist())
    return [{"id": c.id, "name": c.name, "isthing": bool(c.isthing)} for c in vocabulary
            if present is None or c.id in present]
