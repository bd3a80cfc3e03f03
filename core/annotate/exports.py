"""Per-image exports of an object list, and loading one back to continue labelling.

Thin functions over the one set of dataset writers / readers (core.io.formats): an ObjectList
becomes a one-image LabelledImage and is written in each chosen format; a file written that way
(or by the dataset panel, for the same image) is read back into an ObjectList.

    written = export_objects(objects, "out", ["coco", "panoptic", "semantic", "yolo", "labelme"],
                             classes=["dog", "cat"], image=rgb)        # rgb: (H, W, 3) uint8
    objects = load_objects("out/instances.json", height=H, width=W, file_name="a.jpg")

What comes back: COCO instances, YOLO-seg and LabelMe give one object per object (YOLO and
LabelMe as polygons: outlines along pixel edges, holes dropped); COCO panoptic gives the visible
part of each object (one object per pixel, later objects on top); a semantic PNG gives one
object per class (the class-index map cannot tell instances apart).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from core.annotate.objects import ObjectList
from core.io.formats import export_set, read_set
from core.io.formats.coco import read_coco_set
from core.io.formats.common import read_index_png
from core.io.formats.labelme import read_labelme
from core.io.formats.pixelmaps import read_panoptic_set
from core.io.formats.yolo import _names as yolo_names
from core.io.formats.yolo import _object as yolo_object
from core.io.labels import ExportMeta, LabelledImage, LabelledObject, flat_stem

IMAGE_FORMATS = ("coco", "panoptic", "semantic", "yolo", "labelme")


def export_objects(objects: ObjectList, out_dir: str | Path, formats: str | list[str] = IMAGE_FORMATS, *,
                   classes: list[str] | None = None, image: np.ndarray | None = None,
                   meta: ExportMeta | None = None) -> dict[str, list[Path]]:
    """Write the image's objects in each format under out_dir; returns the files by format.
    classes: the ordered class list (fixes the ids; classes the objects use but the list lacks
    are appended); image: (H, W, 3) uint8 RGB, saved beside the YOLO and LabelMe labels."""
    labelled = objects.to_labelled()
    if image is None:
        return export_set(out_dir, [labelled], classes, formats, meta=meta)
    image = np.asarray(image)
    if image.shape[:2] != (objects.height, objects.width):
        raise ValueError(f"the image is {image.shape[:2]}, its objects {objects.height}x{objects.width}")
    with tempfile.TemporaryDirectory() as root:
        target = Path(root) / labelled.file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.astype(np.uint8)).save(target)
        return export_set(out_dir, [labelled], classes, formats, meta=meta, image_root=root)


def load_objects(path: str | Path, height: int, width: int, file_name: str | None = None,
                 classes: list[str] | None = None) -> ObjectList:
    """The object list of one image (height x width) from a COCO instances / panoptic JSON, a
    semantic PNG (or its semantic.json), a YOLO label .txt or folder, or a LabelMe JSON.
    file_name picks the image in a file of several (else the file's only image); classes name
    the indices of a YOLO .txt or semantic PNG without their data.yaml / semantic.json.
    ValueError / FileNotFoundError with the reason on a file that does not fit."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    images = _read(path, height, width, file_name, classes)
    image = _pick(images, file_name, path)
    if (image.height, image.width) != (int(height), int(width)):
        raise ValueError(f"{path} labels a {image.height}x{image.width} image; this one is {height}x{width}")
    image = LabelledImage(file_name or image.file_name, image.height, image.width, image.objects)
    return ObjectList.from_labelled(image)


def _read(path: Path, height: int, width: int, file_name: str | None, classes) -> list[LabelledImage]:
    if path.is_dir():
        return read_set(path)[0]
    if path.suffix.lower() == ".txt":
        return [_read_yolo_txt(path, height, width, file_name, classes)]
    if path.suffix.lower() == ".png":
        return [_read_semantic_png(path, _legend_near(path, classes), file_name or path.stem)]
    if path.suffix.lower() != ".json":
        raise ValueError(f"{path.name}: not a COCO / panoptic / semantic / LabelMe JSON, a YOLO .txt or a PNG")
    doc = json.loads(path.read_text())
    if isinstance(doc, dict) and "shapes" in doc:
        return [read_labelme(path)]
    if isinstance(doc, dict) and "legend" in doc:
        return _read_semantic_json(path, doc)
    if isinstance(doc, dict) and doc.get("annotations") and "segments_info" in doc["annotations"][0]:
        return read_panoptic_set(path)[0]
    return read_coco_set(path)[0]


def _pick(images: list[LabelledImage], file_name: str | None, path: Path) -> LabelledImage:
    """The image called file_name (or with its flat stem); the only one when not given."""
    if file_name is not None:
        found = [im for im in images if im.file_name == file_name] or \
            [im for im in images if flat_stem(im.file_name) == flat_stem(file_name)]
        if found:
            return found[0]
        if len(images) != 1:
            raise ValueError(f"{path.name} has no labels for {file_name}")
    if len(images) != 1:
        raise ValueError(f"{path.name} labels {len(images)} images: say which one (file_name)")
    return images[0]


def _read_yolo_txt(path: Path, height: int, width: int, file_name: str | None, classes) -> LabelledImage:
    """One YOLO-seg label file; class names from the data.yaml of its layout (beside the
    labels/ folder it is under) or beside it, else `classes`."""
    roots = [p.parent for p in path.parents if p.name == "labels"][:1] + [path.parent]
    yaml_path = next((r / "data.yaml" for r in roots if (r / "data.yaml").is_file()), None)
    if yaml_path is not None:
        names = yolo_names((yaml.safe_load(yaml_path.read_text()) or {}).get("names"))
    elif classes:
        names = dict(enumerate(classes))
    else:
        raise ValueError(f"{path.name}: no data.yaml beside it; give the class list to name its ids")
    objects = [yolo_object(line, names, int(height), int(width), path)
               for line in path.read_text().splitlines() if line.strip()]
    return LabelledImage(file_name or path.stem, int(height), int(width), objects)


def _legend_near(png: Path, classes) -> dict[int, str]:
    """index -> class of a semantic PNG: its semantic.json one folder up, else classes (1-based)."""
    legend = png.parent.parent / "semantic.json"
    if legend.is_file():
        return {int(e["id"]): e["name"] for e in json.loads(legend.read_text())["legend"]}
    if classes:
        return {i + 1: c for i, c in enumerate(classes)}
    raise ValueError(f"{png.name}: no semantic.json beside it; give the class list to name its indices")


def _read_semantic_png(png: Path, legend: dict[int, str], file_name: str) -> LabelledImage:
    """One object per class index present (0 is background)."""
    index = read_index_png(png)
    unknown = sorted(set(np.unique(index).tolist()) - {0} - set(legend))
    if unknown:
        raise ValueError(f"{png.name}: class indices {unknown[:5]} are not in the legend")
    objects = [LabelledObject(index == i, legend[i]) for i in sorted(set(np.unique(index).tolist()) - {0})]
    return LabelledImage(file_name, index.shape[0], index.shape[1], objects)


def _read_semantic_json(path: Path, doc: dict) -> list[LabelledImage]:
    legend = {int(e["id"]): e["name"] for e in doc["legend"]}
    root = path.parent.resolve()
    images = []
    for name, rel in doc.get("images", {}).items():
        png = (root / str(rel)).resolve()
        if not png.is_relative_to(root):
            raise ValueError(f"{path.name}: {rel!r} points outside its folder")
        images.append(_read_semantic_png(png, legend, name))
    return images
