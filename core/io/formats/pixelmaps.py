"""The pixel-map formats of a set: COCO panoptic (segment-id RGB PNGs + JSON), class-index
semantic PNGs with the VOC palette (+ legend JSON), and Pascal VOC segmentation
(SegmentationClass/, SegmentationObject/, ImageSets/Segmentation/, labelmap.txt).

Pixels belong to one object each: objects are painted in list order, a later object on top
(as the viewer draws them). Class index 0 is background; VOC keeps 255 for "void".
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from core.io.formats.common import (category_ids, copy_image, meta_dict, painted, palette_png, read_index_png,
                                    suffix_of, voc_palette)
from core.io.labels import ExportMeta, LabelledImage, LabelledObject, unique_stems
from core.io.panoptic import ids_to_rgb, png_bytes, rgb_to_ids

VOC_VOID = 255


def _bbox(mask: np.ndarray) -> list[int]:
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return [int(cols[0]), int(rows[0]), int(cols[-1] + 1 - cols[0]), int(rows[-1] + 1 - rows[0])]


# ----------------------------------------------------------------------------- COCO panoptic
def write_panoptic(out_dir: Path, images: list[LabelledImage], categories: list[str], *,
                   stuff: frozenset[str] = frozenset(), meta: ExportMeta | None = None,
                   image_root: Path | None = None) -> list[Path]:
    """out_dir/panoptic/<stem>.png (segment id = R + 256 G + 256^2 B, 0 void) and
    out_dir/panoptic.json: one segment per thing object, one per stuff category per image;
    a segment left with no pixels (all covered by later objects) is dropped."""
    out_dir = Path(out_dir)
    (out_dir / "panoptic").mkdir(parents=True, exist_ok=True)
    ids = category_ids(categories)
    info = meta_dict(meta)
    doc = {"info": {"description": info["description"], "version": "1.0"}, "images": [], "annotations": [],
           "categories": [{"id": ids[n], "name": n, "isthing": int(n not in stuff),
                           "supercategory": "stuff" if n in stuff else "thing"} for n in categories], **info}
    paths = []
    for image_id, (image, stem) in enumerate(zip(images, unique_stems(images)), start=1):
        segment_of = _segment_ids(image, stuff)
        id_map = painted(image, segment_of, dtype=np.int64)
        segments = []
        for seg_id in sorted(set(segment_of)):
            seg = id_map == seg_id
            if not seg.any():
                continue
            obj = image.objects[segment_of.index(seg_id)]
            segments.append({"id": seg_id, "category_id": ids[obj.category], "area": int(seg.sum()),
                             "bbox": _bbox(seg), "iscrowd": 0})
        png = out_dir / "panoptic" / f"{stem}.png"
        png.write_bytes(png_bytes(ids_to_rgb(id_map)))
        paths.append(png)
        doc["images"].append({"id": image_id, "file_name": image.file_name, "height": image.height,
                              "width": image.width})
        doc["annotations"].append({"image_id": image_id, "file_name": f"{stem}.png", "segments_info": segments})
    path = out_dir / "panoptic.json"
    path.write_text(json.dumps(doc))
    return [path, *paths]


def _segment_ids(image: LabelledImage, stuff: frozenset[str]) -> list[int]:
    """A segment id per object: its own for a thing, one shared per stuff category."""
    ids, stuff_ids = [], {}
    for obj in image.objects:
        if obj.category in stuff:
            stuff_ids.setdefault(obj.category, len(ids) + 1)
            ids.append(stuff_ids[obj.category])
        else:
            ids.append(len(ids) + 1)
    return ids


def read_panoptic_set(json_path: Path) -> tuple[list[LabelledImage], list[str]]:
    """A COCO panoptic JSON + its PNG folder (json_path's stem beside it, else "panoptic/")
    as LabelledImages, one object per segment."""
    json_path = Path(json_path)
    doc = json.loads(json_path.read_text())
    names = {int(c["id"]): c["name"] for c in doc["categories"]}
    folder = json_path.with_suffix("")
    folder = folder if folder.is_dir() else json_path.parent / "panoptic"
    by_image = {int(a["image_id"]): a for a in doc["annotations"]}
    images = []
    for entry in doc["images"]:
        ann = by_image.get(int(entry["id"]), {"segments_info": []})
        objects = []
        if ann["segments_info"]:
            with Image.open(folder / ann["file_name"]) as pil:
                id_map = rgb_to_ids(np.asarray(pil.convert("RGB")))
            objects = [LabelledObject(id_map == int(s["id"]), names[int(s["category_id"])])
                       for s in ann["segments_info"]]
        images.append(LabelledImage(entry["file_name"], int(entry["height"]), int(entry["width"]), objects))
    return images, [names[k] for k in sorted(names)]


# ----------------------------------------------------------------------------- semantic PNG
def semantic_map(image: LabelledImage, ids: dict[str, int]) -> np.ndarray:
    """(H, W) int32 class index per pixel (0 background), later objects on top."""
    return painted(image, [ids[o.category] for o in image.objects])


def write_semantic(out_dir: Path, images: list[LabelledImage], categories: list[str], *,
                   meta: ExportMeta | None = None, image_root: Path | None = None) -> list[Path]:
    """out_dir/semantic/<stem>.png (class index, VOC palette; 16-bit without palette past 255
    classes) and out_dir/semantic.json (legend: index -> name; 0 background)."""
    out_dir = Path(out_dir)
    (out_dir / "semantic").mkdir(parents=True, exist_ok=True)
    ids = category_ids(categories)
    paths = []
    for image, stem in zip(images, unique_stems(images)):
        class_map = semantic_map(image, ids)
        path = out_dir / "semantic" / f"{stem}.png"
        path.write_bytes(palette_png(class_map) if len(categories) < 256 else png_bytes(class_map.astype(np.uint16)))
        paths.append(path)
    legend = {"background": 0, "legend": [{"id": ids[n], "name": n} for n in categories],
              "images": {im.file_name: f"semantic/{stem}.png" for im, stem in zip(images, unique_stems(images))},
              **meta_dict(meta)}
    path = out_dir / "semantic.json"
    path.write_text(json.dumps(legend))
    return [path, *paths]


# ----------------------------------------------------------------------------- Pascal VOC
def write_voc(out_dir: Path, images: list[LabelledImage], categories: list[str], *,
              meta: ExportMeta | None = None, image_root: Path | None = None) -> list[Path]:
    """Pascal VOC segmentation under out_dir/voc: SegmentationClass/<stem>.png (class index,
    VOC palette), SegmentationObject/<stem>.png (instance index 1..K in list order),
    ImageSets/Segmentation/train.txt, labelmap.txt (name:r,g,b::, as CVAT/Datumaro read it),
    JPEGImages/ (copies, when `image_root` has the files) and provenance.json."""
    if len(categories) >= VOC_VOID:
        raise ValueError(f"Pascal VOC holds at most {VOC_VOID - 1} classes, not {len(categories)}")
    root = Path(out_dir) / "voc"
    for sub in ("SegmentationClass", "SegmentationObject", "ImageSets/Segmentation", "JPEGImages"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = category_ids(categories)
    stems = unique_stems(images)
    paths = []
    for image, stem in zip(images, stems):
        if len(image.objects) >= VOC_VOID:
            raise ValueError(f"{image.file_name}: VOC holds at most {VOC_VOID - 1} objects per image")
        for sub, index_map in (("SegmentationClass", semantic_map(image, ids)),
                               ("SegmentationObject", painted(image, list(range(1, len(image.objects) + 1))))):
            path = root / sub / f"{stem}.png"
            path.write_bytes(palette_png(index_map))
            paths.append(path)
        copy_image(image_root, image.file_name, root / "JPEGImages" / f"{stem}{suffix_of(image.file_name)}")
    (root / "ImageSets/Segmentation/train.txt").write_text("".join(f"{s}\n" for s in stems))
    palette = voc_palette()
    lines = ["# label:color_rgb:parts:actions", "background:0,0,0::"]
    lines += [f"{n}:{','.join(str(int(v)) for v in palette[ids[n]])}::" for n in categories]
    (root / "labelmap.txt").write_text("\n".join(lines) + "\n")
    (root / "provenance.json").write_text(json.dumps({**meta_dict(meta), "images": {
        s: {"file_name": im.file_name, "height": im.height, "width": im.width} for s, im in zip(stems, images)}}))
    return [root / "labelmap.txt", root / "ImageSets/Segmentation/train.txt", *paths]


def read_voc_set(root: Path) -> tuple[list[LabelledImage], list[str]]:
    """A VOC segmentation folder (the one holding labelmap.txt) as LabelledImages: one object
    per SegmentationObject index, its class the most common SegmentationClass index under it
    (named by labelmap.txt, else 'class N')."""
    root = Path(root)
    names = _labelmap(root / "labelmap.txt")
    stems = (root / "ImageSets/Segmentation/train.txt").read_text().split()
    provenance = root / "provenance.json"
    known = json.loads(provenance.read_text()).get("images", {}) if provenance.is_file() else {}
    images = []
    for stem in stems:
        classes = read_index_png(root / "SegmentationClass" / f"{stem}.png")
        instances = read_index_png(root / "SegmentationObject" / f"{stem}.png")
        objects = []
        for index in sorted(set(np.unique(instances).tolist()) - {0, VOC_VOID}):
            mask = instances == index
            cls = int(np.bincount(classes[mask]).argmax())
            objects.append(LabelledObject(mask, names.get(cls, f"class {cls}")))
        file_name = known.get(stem, {}).get("file_name", f"{stem}.jpg")
        images.append(LabelledImage(file_name, *classes.shape, objects))
    return images, [names[k] for k in sorted(names) if k != 0]


def _labelmap(path: Path) -> dict[int, str]:
    """{class index: name} from labelmap.txt (line order, background first)."""
    if not path.is_file():
        return {}
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return {i: ln.split(":", 1)[0] for i, ln in enumerate(lines)}
