"""Referring-expression data: RefCOCO-family files, JSON lines, and sentences generated from COCO.

Formats:
  * the RefCOCO / RefCOCO+ / RefCOCOg layout: a pickled list of refs (``refs(unc).p``,
    ``refs(umd).p``, ...; each with image_id, ann_id, category_id, split and sentences[].sent)
    beside the COCO ``instances.json`` of the same images; the image files come from COCO
    train2014. The pickle is read with :class:`PlainUnpickler`, which admits plain lists,
    dicts, tuples, sets, strings and numbers only: a file that names any class or function
    (the way pickles run code) is refused with a ValueError.
  * JSON lines, one sample a line: ``{"image": path (relative to the file's folder or an images
    folder), "sentence": str, "box": [x, y, w, h]`` or ``"mask": COCO RLE}``, optional
    ``"category"``, ``"split"``, ``"candidates": [{"mask": RLE} | {"box": [x, y, w, h]}, ...]``
    (ground-truth candidates; add ``"target_index"``) and ``"candidate_categories"``.
  * synthetic referring data generated from a COCO folder (e.g. ../shared/data/coco128): see
    :func:`synthetic_from_coco`.
  * candidate masks from another mask source (e.g. FreeSOLO, as Global-Local CLIP used), for
    the ``file`` candidates of the evaluation: JSON lines, one image a line,
    ``{"image": file name or path, "masks": [COCO RLE, ...]}``; matched to the samples by the
    image's file name (:func:`read_candidate_masks`).
"""
from __future__ import annotations

import io
import json
import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from core.io.coco import annotation_mask, read_coco
from core.io.masks import coco_box_to_xyxy, mask_to_rle
from core.refer import direction_order

# ----------------------------------------------------------------------------- records


@dataclass
class ReferSample:
    """One sentence to ground.

    image: path of the image file; sentence: the referring expression;
    target: COCO-style dict with ``segmentation`` (polygons or RLE) or only ``bbox`` [x, y, w, h];
    category: target category name or None; candidates: COCO-style dicts of the image's
    annotated objects (ground-truth candidates) or None; candidate_categories: their category
    names; target_index: which candidate is the target (None when unknown);
    ref_id / image_id: identifiers for the report.
    """

    image: str
    sentence: str
    target: dict
    category: str | None = None
    candidates: list | None = None
    candidate_categories: list | None = None
    target_index: int | None = None
    ref_id: str = ""
    image_id: str = ""


@dataclass
class ReferDataset:
    """Samples plus the names every reported number must carry: dataset and split."""

    name: str
    split: str
    samples: list = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.samples)


# ----------------------------------------------------------------------------- readers


class PlainUnpickler(pickle.Unpickler):
    """Unpickles plain data only: lists, dicts, tuples, strings, numbers, None, bools and
    sets. Any other global a pickle names (a class, a function: the way pickles run code) raises
    ValueError instead of being imported."""

    _ALLOWED = {("builtins", "set"), ("builtins", "frozenset"), ("__builtin__", "set"),
                ("__builtin__", "frozenset")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise ValueError(f"the pickle refers to {module}.{name}; only plain lists, dicts, strings and "
                         f"numbers are read (a RefCOCO refs file has nothing else)")


def load_plain_pickle(path) -> object:
    """The plain data in the pickle file ``path`` (see :class:`PlainUnpickler`; Python 2 strings
    are read as latin-1). ValueError for anything else or a damaged file."""
    data = Path(path).read_bytes()
    try:
        return PlainUnpickler(io.BytesIO(data), encoding="latin1").load()
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise ValueError(f"{path} is not a readable pickle ({type(exc).__name__}: {exc})") from None


def read_refcoco(refs_path, instances_path, images_dir, split: str | None = None,
                 name: str | None = None) -> ReferDataset:
    """Samples of a RefCOCO-family ``refs(*).p`` + ``instances.json`` (one per sentence).

    split: keep refs of this split ("val", "testA", "test", ...; None = all). Ground-truth
    candidates are the non-crowd annotations of each image. The dataset name defaults to the
    folder name and split-by ("refcocog (umd)").
    """
    refs_path, instances_path, images_dir = Path(refs_path), Path(instances_path), Path(images_dir)
    for p in (refs_path, instances_path):
        if not p.is_file():
            raise FileNotFoundError(f"not found: {p}")
    refs = load_plain_pickle(refs_path)
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise ValueError(f"{refs_path} is not a RefCOCO refs file (expected a pickled list of refs)")
    coco = read_coco(instances_path)
    images, categories, anns_by_image = coco.images, coco.categories, coco.by_image
    anns = {a["id"]: a for group in anns_by_image.values() for a in group}
    split_by = refs_path.stem[refs_path.stem.find("(") + 1:-1] if "(" in refs_path.stem else refs_path.stem
    dataset = ReferDataset(name=name or f"{refs_path.parent.name} ({split_by})", split=split or "all",
                           source=f"{refs_path} + {instances_path}")
    for ref in refs:
        if split is not None and ref.get("split") != split:
            continue
        ann = anns.get(ref["ann_id"])
        if ann is None:
            raise ValueError(f"ref {ref.get('ref_id')}: annotation {ref['ann_id']} is not in {instances_path}")
        info = images[ref["image_id"]]
        cands = [a for a in anns_by_image[ref["image_id"]] if not a.get("iscrowd")]
        target_index = next((i for i, a in enumerate(cands) if a["id"] == ann["id"]), None)
        for sent in ref["sentences"]:
            text = sent.get("raw") or sent.get("sent")
            if not text or not str(text).strip():
                continue
            dataset.samples.append(ReferSample(
                image=str(images_dir / info["file_name"]), sentence=str(text), target=ann,
                category=categories.get(ref.get("category_id", ann["category_id"])),
                candidates=cands, candidate_categories=[categories.get(a["category_id"]) for a in cands],
                target_index=target_index, ref_id=str(ref.get("ref_id", "")), image_id=str(ref["image_id"])))
    if split is not None and not dataset.samples:
        found = sorted({str(r.get("split")) for r in refs})
        raise ValueError(f"no refs with split {split!r} in {refs_path}; it has {found}")
    return dataset


def _json_lines(path: Path):
    """(line number, where "FILE:LINE", parsed object) for every non-blank line; ValueError
    names the bad line."""
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            yield n, where, json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not JSON ({exc.msg})") from None


def read_candidate_masks(path) -> dict[str, list[dict]]:
    """Candidate masks of another mask source: {image file name: [COCO RLE, ...]}.

    JSON lines, one image a line: ``{"image": name or path, "masks": [RLE, ...]}``; the key is
    the file name (the path's last part), which is how the evaluation finds a sample's image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"not found: {path}")
    out: dict[str, list[dict]] = {}
    for _, where, obj in _json_lines(path):
        if not isinstance(obj, dict) or not isinstance(obj.get("image"), str) or not isinstance(obj.get("masks"), list):
            raise ValueError(f"{where}: needs 'image' (a string) and 'masks' (a list of COCO RLE)")
        masks = [_jsonl_object({"mask": m}, f"{where} mask {i}") for i, m in enumerate(obj["masks"])]
        out.setdefault(Path(obj["image"]).name, []).extend(masks)
    if not out:
        raise ValueError(f"{path}: no images")
    return out


def _jsonl_object(obj: dict, where: str) -> dict:
    if "mask" in obj:
        rle = dict(obj["mask"])
        if "size" not in rle or "counts" not in rle:
            raise ValueError(f"{where}: 'mask' must be COCO RLE with 'size' and 'counts'")
        return {"segmentation": rle}
    if "box" in obj:
        box = [float(v) for v in obj["box"]]
        if len(box) != 4 or box[2] <= 0 or box[3] <= 0:
            raise ValueError(f"{where}: 'box' must be [x, y, w, h] with w, h > 0")
        return {"bbox": box}
    raise ValueError(f"{where}: needs 'mask' (COCO RLE) or 'box' [x, y, w, h]")


def read_jsonl(path, images_dir=None, split: str | None = None) -> ReferDataset:
    """Samples of the JSON-lines format (see the module docstring). Relative image paths are
    resolved against ``images_dir`` or the file's folder; ``split`` keeps lines with that
    "split" value."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"not found: {path}")
    base = Path(images_dir) if images_dir else path.parent
    dataset = ReferDataset(name=path.stem, split=split or "all", source=str(path))
    for n, where, obj in _json_lines(path):
        if not isinstance(obj, dict) or not isinstance(obj.get("image"), str) or not isinstance(obj.get("sentence"), str):
            raise ValueError(f"{where}: needs 'image' and 'sentence' strings")
        if split is not None and obj.get("split") != split:
            continue
        image = Path(obj["image"])
        cands = obj.get("candidates")
        candidates = None if cands is None else [_jsonl_object(c, f"{where} candidate {i}") for i, c in enumerate(cands)]
        target_index = obj.get("target_index")
        if candidates is not None and target_index is not None and not 0 <= int(target_index) < len(candidates):
            raise ValueError(f"{where}: target_index {target_index} outside the {len(candidates)} candidates")
        dataset.samples.append(ReferSample(
            image=str(image if image.is_absolute() else base / image), sentence=obj["sentence"],
            target=_jsonl_object(obj, where), category=obj.get("category"), candidates=candidates,
            candidate_categories=obj.get("candidate_categories"),
            target_index=None if target_index is None else int(target_index),
            ref_id=str(obj.get("ref_id", n)), image_id=str(obj.get("image_id", obj["image"]))))
    if not dataset.samples:
        raise ValueError(f"{path}: no samples" + (f" with split {split!r}" if split else ""))
    return dataset


def write_jsonl(dataset: ReferDataset, path) -> Path:
    """Write ``dataset`` in the JSON-lines format (masks as COCO RLE, image paths absolute)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sizes: dict = {}

    def rle(ann: dict, image: str) -> dict:
        if "bbox" in ann and not ann.get("segmentation"):
            return {"box": list(ann["bbox"])}
        if image not in sizes:
            with Image.open(image) as im:
                sizes[image] = (im.height, im.width)
        return {"mask": mask_to_rle(annotation_mask(ann, *sizes[image]))}

    with path.open("w") as f:
        for s in dataset.samples:
            row = {"image": str(Path(s.image).resolve()), "sentence": s.sentence, **rle(s.target, s.image),
                   "category": s.category, "split": dataset.split, "ref_id": s.ref_id, "image_id": s.image_id}
            if s.candidates is not None:
                row["candidates"] = [rle(a, s.image) for a in s.candidates]
                row["candidate_categories"] = s.candidate_categories
                row["target_index"] = s.target_index
            f.write(json.dumps(row) + "\n")
    return path


# ----------------------------------------------------------------------------- synthetic data

#: Sentence templates of the synthetic set: (kind, template); kind is the rule that picks the target.
SYNTHETIC_TEMPLATES = {
    "left": ("the leftmost {cat}", "the {cat} on the left", "{cat} far left", "left {cat}"),
    "right": ("the rightmost {cat}", "the {cat} on the right", "{cat} far right", "right {cat}"),
    "top": ("the {cat} at the top", "the upper {cat}", "top {cat}"),
    "bottom": ("the {cat} at the bottom", "the lower {cat}", "bottom {cat}"),
    "second-left": ("the second {cat} from the left",),
    "second-right": ("the second {cat} from the right",),
    "center": ("the {cat} in the middle",),
    "none": ("the {cat}", "a {cat}"),
}


def _centres(anns: list) -> np.ndarray:
    return np.array([[a["bbox"][0] + a["bbox"][2] / 2, a["bbox"][1] + a["bbox"][3] / 2] for a in anns])


def synthetic_from_coco(coco_dir, *, max_same: int = 3, min_gap: float = 0.05, min_area: float = 1000.0,
                        singles_per_image: int = 1, seed: int = 0, limit_images: int | None = None) -> ReferDataset:
    """Referring sentences with ground-truth masks generated from a COCO folder (images/ + instances.json).

    For every image and category with 2..``max_same`` non-crowd objects of at least
    ``min_area`` pixels: "the leftmost {cat}" / "the {cat} on the right" (box centres along x
    at least ``min_gap`` x image width apart), "the {cat} at the top" / "... bottom" (same in y),
    "the second {cat} from the left/right" (3 objects, both gaps clear) and "the {cat} in the
    middle" (3 objects, when the middle one is also the one nearest the image centre, so the
    sentence is unambiguous for :func:`core.refer.choose`). For up to ``singles_per_image``
    categories with one object in an image with two or more objects: "the {cat}" (no
    direction). Templates are drawn with ``seed``. Ground-truth candidates are all non-crowd
    objects of the image of at least ``min_area`` pixels; with ``max_same`` <= 3 the target's
    category never has more candidates than the default top-3.
    """
    coco_dir = Path(coco_dir)
    ann_file = coco_dir / "instances.json"
    if not ann_file.is_file():
        raise FileNotFoundError(f"{ann_file} not found (a COCO folder has images/ and instances.json)")
    coco = read_coco(ann_file)
    images, categories, anns_by_image = coco.images, coco.categories, coco.by_image
    rng = random.Random(seed)
    dataset = ReferDataset(name=f"{coco_dir.name}-synthetic", split=f"all (generated, seed {seed})",
                           source=f"generated from {ann_file}")
    image_ids = sorted(anns_by_image)
    if limit_images is not None:
        image_ids = image_ids[:limit_images]
    for image_id in image_ids:
        info = images[image_id]
        width, height = info["width"], info["height"]
        cands = [a for a in anns_by_image[image_id] if not a.get("iscrowd") and a["area"] >= min_area]
        if len(cands) < 2:
            continue
        cand_cats = [categories[a["category_id"]] for a in cands]
        path = str(coco_dir / "images" / info["file_name"])

        def add(kind: str, cat: str, target: int) -> None:
            template = rng.choice(SYNTHETIC_TEMPLATES[kind])
            dataset.samples.append(ReferSample(
                image=path, sentence=template.format(cat=cat), target=cands[target], category=cat,
                candidates=cands, candidate_categories=cand_cats, target_index=target,
                ref_id=f"{image_id}-{cands[target]['id']}-{kind}", image_id=str(image_id)))

        singles = 0
        for cat in sorted(set(cand_cats)):
            members = [i for i, c in enumerate(cand_cats) if c == cat]
            if len(members) == 1:
                if singles < singles_per_image:
                    add("none", cat, members[0])
                    singles += 1
                continue
            if len(members) > max_same:
                continue
            centres = _centres([cands[i] for i in members])
            for axis, (low, high), extent in ((0, ("left", "right"), width), (1, ("top", "bottom"), height)):
                order = np.argsort(centres[:, axis], kind="stable")
                gaps = np.diff(centres[order, axis])
                if gaps[0] >= min_gap * extent:
                    add(low, cat, members[order[0]])
                if gaps[-1] >= min_gap * extent:
                    add(high, cat, members[order[-1]])
                if axis == 0 and len(members) == 3 and gaps.min() >= min_gap * extent:
                    kind = rng.choice(("second-left", "second-right"))
                    add(kind, cat, members[order[1]])
                    boxes = np.stack([coco_box_to_xyxy(cands[i]["bbox"]) for i in members])
                    nearest = direction_order("center", boxes, np.ones(3), image_hw=(height, width))
                    if nearest[0] == order[1]:
                        add("center", cat, members[order[1]])
    if not dataset.samples:
        raise ValueError(f"no image in {coco_dir} has two objects of one category (min_area={min_area})")
    return dataset
