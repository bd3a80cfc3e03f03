"""YOLO segmentation in Ultralytics' layout: images/<split>/<name>, labels/<split>/<stem>.txt
with one line per object "class x1 y1 x2 y2 ..." (normalised, 0..1), and data.yaml
(path, train, val, names). Read back by Ultralytics, supervision's
DetectionDataset.from_yolo, or `read_yolo_set`.

Polygons are OpenCV contours through the boundary pixels' centres (readers fill them with
OpenCV's fillPoly, boundary included); each vertex is written a quarter pixel past the
centre so readers that round (supervision) and readers that truncate (Ultralytics) land on
the same pixel. An object in several parts is one line through all parts (zero-width
bridges, as Ultralytics' own COCO converter does). YOLO has no score, origin or review
state; holes are not kept.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from core.io.formats.common import category_ids, copy_image, meta_dict
from core.io.formats.polygons import join_parts, mask_to_polygons, polygons_to_mask
from core.io.labels import ExportMeta, LabelledImage, LabelledObject

NUDGE = 0.25
IMAGE_SUFFIXES = (".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".mpo", ".dng")


def yolo_line(obj: LabelledObject, class_id: int, height: int, width: int) -> str | None:
    """The label line of one object (None when its mask has no contour)."""
    ring = join_parts(mask_to_polygons(obj.mask, corners=False))
    if len(ring) == 0:
        return None
    if len(ring) < 3:                                        # a pixel or a short line: repeat to 3 points
        ring = np.concatenate([ring, ring[::-1], ring])[:3]
    xy = (ring + NUDGE) / np.array([width, height], dtype=np.float64)
    return " ".join([str(class_id), *(f"{v:.6f}" for v in np.clip(xy, 0.0, 1.0).ravel())])


def label_path(file_name: str, split: str = "train") -> str:
    """labels/<split>/<name without extension>.txt of an image's relative path."""
    stem = file_name.rsplit(".", 1)[0] if "." in Path(file_name).name else file_name
    return f"labels/{split}/{stem}.txt"


def write_yolo(out_dir: Path, images: list[LabelledImage], categories: list[str], *, split: str = "train",
               meta: ExportMeta | None = None, image_root: Path | None = None) -> list[Path]:
    """Ultralytics' layout under out_dir/yolo (every image in `split`; data.yaml's val points
    at the same folder, to be split by the person). Images are copied when `image_root` has them."""
    root = Path(out_dir) / "yolo"
    ids = category_ids(categories, start=0)
    paths = []
    for image in images:
        lines = [yolo_line(o, ids[o.category], image.height, image.width) for o in image.objects]
        path = root / label_path(image.file_name, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{ln}\n" for ln in lines if ln))
        paths.append(path)
        copy_image(image_root, image.file_name, root / "images" / split / image.file_name)
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    data = {"path": ".", "train": f"images/{split}", "val": f"images/{split}",
            "names": {ids[n]: n for n in categories}, "nc": len(categories), **meta_dict(meta)}
    (root / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return [root / "data.yaml", *paths]


def read_yolo_set(root: Path, split: str | None = None) -> tuple[list[LabelledImage], list[str]]:
    """An Ultralytics-layout folder (holding data.yaml) as LabelledImages, one object per
    line (polygon lines filled like Ultralytics; 5-token lines are boxes). Image sizes come
    from the image files; a label file without its image is refused."""
    root = Path(root)
    data = yaml.safe_load((root / "data.yaml").read_text()) or {}
    names = _names(data.get("names"))
    splits = [split] if split else sorted(p.name for p in (root / "labels").iterdir() if p.is_dir())
    images = []
    for part in splits:
        for label in sorted((root / "labels" / part).rglob("*.txt")):
            rel = label.relative_to(root / "labels" / part).with_suffix("")
            source = _image_for(root / "images" / part / rel)
            with Image.open(source) as pil:
                width, height = pil.size
            objects = [_object(line, names, height, width, label) for line in label.read_text().splitlines()
                       if line.strip()]
            images.append(LabelledImage(source.relative_to(root / "images" / part).as_posix(), height, width,
                                        objects))
    return images, [names[k] for k in sorted(names)]


def _names(raw) -> dict[int, str]:
    if isinstance(raw, list):
        return dict(enumerate(str(n) for n in raw))
    if isinstance(raw, dict):
        return {int(k): str(v) for k, v in raw.items()}
    raise ValueError("data.yaml has no 'names' (a list or a mapping of class id to name)")


def _image_for(stem_path: Path) -> Path:
    for suffix in IMAGE_SUFFIXES:
        for candidate in (stem_path.with_name(stem_path.name + suffix),
                          stem_path.with_name(stem_path.name + suffix.upper())):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"no image for the labels of {stem_path.name}")


def _object(line: str, names: dict[int, str], height: int, width: int, where: Path) -> LabelledObject:
    values = line.split()
    try:
        cls, coords = int(values[0]), np.array(values[1:], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{where}: not a YOLO line: {line[:60]!r}") from exc
    if cls not in names:
        raise ValueError(f"{where}: class {cls} is not in data.yaml's names")
    scale = np.array([width, height], dtype=np.float64)
    if len(coords) == 4:                                     # a box: cx cy w h
        cx, cy, bw, bh = coords * np.tile(scale, 2)
        ring = np.array([[cx - bw / 2, cy - bh / 2], [cx + bw / 2, cy - bh / 2],
                         [cx + bw / 2, cy + bh / 2], [cx - bw / 2, cy + bh / 2]])
        return LabelledObject(polygons_to_mask([ring], height, width, corners=True), names[cls])
    if len(coords) < 6 or len(coords) % 2:
        raise ValueError(f"{where}: a polygon line needs an even number (>= 6) of coordinates")
    ring = coords.reshape(-1, 2) * scale
    return LabelledObject(polygons_to_mask([np.floor(ring)], height, width, corners=False), names[cls])
