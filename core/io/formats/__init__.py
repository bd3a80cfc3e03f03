"""The dataset formats: ONE set of writers (and readers) over `list[LabelledImage]` and an
ordered category list, shared by the command line (`python -m core label FOLDER`), the app's
Dataset panel and the single-image exports.

    from core.io.formats import export_set, read_set
    written = export_set("out", images, ["dog", "cat"], ["coco", "yolo", "voc", "labelme"])
    images, categories = read_set("out/yolo")          # coco / yolo / labelme / voc / panoptic

Writers (name -> what lands under the output folder):
- coco:          instances.json (compressed RLE, exact)
- coco-polygons: instances_polygons.json (polygons along pixel edges; holes dropped)
- panoptic:      panoptic.json + panoptic/<stem>.png
- semantic:      semantic.json + semantic/<stem>.png (class index, VOC palette)
- voc:           voc/ (SegmentationClass, SegmentationObject, ImageSets, labelmap.txt, JPEGImages)
- yolo:          yolo/ (images/train, labels/train, data.yaml)
- labelme:       labelme/<stem>.json (+ the image)
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from core.io.formats.coco import read_coco_set, write_coco
from core.io.formats.labelme import read_labelme, read_labelme_set, write_labelme
from core.io.formats.pixelmaps import read_panoptic_set, read_voc_set, write_panoptic, write_semantic, write_voc
from core.io.formats.yolo import read_yolo_set, write_yolo
from core.io.labels import ExportMeta, LabelledImage, category_list, select


def _coco_polygons(out_dir, images, categories, **kw):
    return write_coco(out_dir, images, categories, polygons=True, **kw)


WRITERS: dict[str, Callable] = {"coco": write_coco, "coco-polygons": _coco_polygons, "panoptic": write_panoptic,
                                "semantic": write_semantic, "voc": write_voc, "yolo": write_yolo,
                                "labelme": write_labelme}
ALIASES = {"instances": "coco", "coco-panoptic": "panoptic", "png": "semantic", "yolo-seg": "yolo",
           "ultralytics": "yolo", "pascal-voc": "voc"}


def parse_formats(text: str | list[str]) -> list[str]:
    """Format names from "coco,yolo" or a list; ValueError naming the unknown ones."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [ALIASES.get(s.strip().lower(), s.strip().lower()) for s in items if s.strip()]
    unknown = [n for n in names if n not in WRITERS]
    if unknown or not names:
        raise ValueError(f"unknown export format(s) {', '.join(unknown) or '(none)'}; "
                         f"choose among {', '.join(WRITERS)}")
    return list(dict.fromkeys(names))


def export_set(out_dir: str | Path, images: list[LabelledImage], categories: list[str] | None = None,
               formats: str | list[str] = "coco", *, reviewed_only: bool = False, meta: ExportMeta | None = None,
               image_root: str | Path | None = None) -> dict[str, list[Path]]:
    """Write `images` in each format under out_dir; returns the written files by format.
    Categories: the ordered names (names the objects use but the list lacks are appended);
    reviewed_only keeps only reviewed objects; image_root: where the image files are, for the
    layouts that carry images (YOLO, VOC, LabelMe)."""
    chosen = parse_formats(formats)
    kept = select(images, reviewed_only)
    names = category_list(kept, categories)
    root = Path(image_root) if image_root else None
    return {fmt: WRITERS[fmt](Path(out_dir), kept, names, meta=meta, image_root=root) for fmt in chosen}


def read_set(path: str | Path) -> tuple[list[LabelledImage], list[str]]:
    """Read a labelled set from a COCO instances or panoptic JSON, a YOLO folder (data.yaml),
    a VOC folder (labelmap.txt), a LabelMe folder or a single LabelMe JSON."""
    path = Path(path)
    if path.is_dir():
        if (path / "data.yaml").is_file():
            return read_yolo_set(path)
        if (path / "labelmap.txt").is_file():
            return read_voc_set(path)
        if any(path.glob("*.json")):
            return read_labelme_set(path)
        raise ValueError(f"{path} holds no data.yaml (YOLO), labelmap.txt (VOC) or LabelMe JSON files")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix == ".json":
        import json

        head = json.loads(path.read_text())
        if isinstance(head, dict) and "shapes" in head:
            image = read_labelme(path)
            return [image], category_list([image])
        if isinstance(head, dict) and head.get("annotations") and "segments_info" in head["annotations"][0]:
            return read_panoptic_set(path)
        return read_coco_set(path)
    raise ValueError(f"{path}: not a COCO, panoptic or LabelMe JSON, nor a YOLO / VOC / LabelMe folder")
