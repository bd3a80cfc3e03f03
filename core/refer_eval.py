"""Referring segmentation evaluation: oIoU / mIoU per ablation row, overall and with a direction word.

`python -m core evaluate refer (--refs 'refs(umd).p' --instances instances.json --images DIR |
--jsonl FILE | --synthetic-coco DIR) [--split val] --out DIR ...`

Data:
  * the RefCOCO / RefCOCO+ / RefCOCOg layout: a pickled list of refs (``refs(unc).p``,
    ``refs(umd).p``, ...; each with image_id, ann_id, category_id, split and sentences[].sent)
    beside the COCO ``instances.json`` of the same images; the image files come from COCO
    train2014 (``--images``). Pickles run code when loaded: only read files you trust.
  * JSON lines, one sample a line: ``{"image": path (relative to the file's folder or --images),
    "sentence": str, "box": [x, y, w, h]`` or ``"mask": COCO RLE}``, optional ``"category"``,
    ``"split"``, ``"candidates": [{"mask": RLE} | {"box": [x, y, w, h]}, ...]`` (ground-truth
    candidates; add ``"target_index"``) and ``"candidate_categories"``.
  * synthetic referring data generated from a COCO folder (``--synthetic-coco``, e.g.
    ../shared/data/coco128): see :func:`synthetic_from_coco`.

Rows (the source paper's ablation): candidates ``gt`` (the annotated objects of the image) or
``sam`` (SAM automatic masks) x scoring ``oracle`` (gt only: the candidates of the target's
category, all scored equal, so only the direction rule decides), ``local``, ``global``,
``mixed`` x orientation off / on.

Metrics, per row: oIoU = sum_i |P_i & G_i| / sum_i |P_i | G_i| (overall IoU, dominated by large
objects) and mIoU = mean_i |P_i & G_i| / |P_i | G_i|, over all samples and over the samples
whose sentence has a direction word (``core.refer.parse(...).direction`` is not None).
Outputs: report.json and report.md in --out; the table on stderr; a JSON summary on stdout.
"""
from __future__ import annotations

import argparse
import json
import pickle
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from core.refer import (
    GroundingSettings,
    embed_candidates,
    mix_scores,
    parse,
    rank_and_choose,
    sam_candidates,
)

CANDIDATE_SOURCES = ("gt", "sam")
ROW_SCORINGS = ("oracle", "local", "global", "mixed")

#: Published numbers, with the dataset and split each is on.
PUBLISHED = [
    {"method": "Global-Local CLIP (source paper's baseline)", "dataset": "RefCOCO", "split": "val (UNC)",
     "oIoU": 24.83, "mIoU": None},
    {"method": "Global-Local CLIP", "dataset": "RefCOCOg", "split": "val (UMD)", "oIoU": 31.08, "mIoU": 33.70},
]


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


def annotation_mask(ann: dict, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of a COCO-style dict: its ``segmentation``, else its ``bbox`` rectangle."""
    from core.masks import box_to_mask, coco_ann_to_mask

    if ann.get("segmentation"):
        return coco_ann_to_mask(ann, height, width)
    if "bbox" not in ann:
        raise ValueError("a target needs a 'segmentation' (mask) or a 'bbox' [x, y, w, h]")
    x, y, w, h = (float(v) for v in ann["bbox"])
    return box_to_mask((x, y, x + w, y + h), (height, width))


# ----------------------------------------------------------------------------- readers


def _index_instances(instances: dict):
    images = {im["id"]: im for im in instances["images"]}
    categories = {c["id"]: c["name"] for c in instances.get("categories", [])}
    anns_by_image: dict = {}
    for ann in instances["annotations"]:
        anns_by_image.setdefault(ann["image_id"], []).append(ann)
    return images, categories, anns_by_image


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
    with refs_path.open("rb") as f:
        refs = pickle.load(f, encoding="latin1")
    if not isinstance(refs, list):
        raise ValueError(f"{refs_path} is not a RefCOCO refs file (expected a pickled list of refs)")
    images, categories, anns_by_image = _index_instances(json.loads(instances_path.read_text()))
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
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not JSON ({exc.msg})") from None
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
    from core.masks import mask_to_rle

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sizes: dict = {}

    def rle(ann: dict, image: str) -> dict:
        if "bbox" in ann and not ann.get("segmentation"):
            return {"box": list(ann["bbox"])}
        if image not in sizes:
            from PIL import Image

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
    from core.refer import direction_order

    coco_dir = Path(coco_dir)
    ann_file = coco_dir / "instances.json"
    if not ann_file.is_file():
        raise FileNotFoundError(f"{ann_file} not found (a COCO folder has images/ and instances.json)")
    images, categories, anns_by_image = _index_instances(json.loads(ann_file.read_text()))
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
                    boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                       a["bbox"][1] + a["bbox"][3]] for a in (cands[i] for i in members)])
                    nearest = direction_order("center", boxes, np.ones(3), image_size=(width, height))
                    if nearest[0] == order[1]:
                        add("center", cat, members[order[1]])
    if not dataset.samples:
        raise ValueError(f"no image in {coco_dir} has two objects of one category (min_area={min_area})")
    return dataset


# ----------------------------------------------------------------------------- metrics


def iou_metrics(intersections, unions) -> dict:
    """oIoU, mIoU and Pr@0.5 (percent) of per-sample pixel counts.

    intersections, unions: (N,) |P & G| and |P | G|. oIoU = 100 * sum(I) / sum(U);
    mIoU = 100 * mean(I / U); pr@0.5 = 100 * fraction of samples with I / U >= 0.5
    (a sample with U = 0 has IoU 1). NaN when N = 0.
    """
    i = np.asarray(intersections, dtype=np.float64)
    u = np.asarray(unions, dtype=np.float64)
    if i.shape != u.shape or i.ndim != 1:
        raise ValueError(f"intersections and unions must be equal-length 1-D arrays, got {i.shape} and {u.shape}")
    if np.any(i > u) or np.any(i < 0):
        raise ValueError("each intersection must be between 0 and its union")
    n = len(i)
    if n == 0:
        return {"oIoU": float("nan"), "mIoU": float("nan"), "pr@0.5": float("nan"), "n": 0}
    per = np.where(u > 0, i / np.where(u > 0, u, 1), 1.0)
    total_u = u.sum()
    return {"oIoU": float(100 * i.sum() / total_u) if total_u > 0 else 100.0,
            "mIoU": float(100 * per.mean()), "pr@0.5": float(100 * (per >= 0.5).mean()), "n": n}


# ----------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Row:
    """One ablation row: candidate source x scoring x orientation."""

    candidates: str
    scoring: str
    orientation: bool

    def __post_init__(self) -> None:
        if self.candidates not in CANDIDATE_SOURCES:
            raise ValueError(f"candidates must be one of {CANDIDATE_SOURCES}, got {self.candidates!r}")
        if self.scoring not in ROW_SCORINGS:
            raise ValueError(f"scoring must be one of {ROW_SCORINGS}, got {self.scoring!r}")
        if self.scoring == "oracle" and self.candidates != "gt":
            raise ValueError("the oracle scorer needs ground-truth candidates (candidates='gt')")

    @property
    def name(self) -> str:
        return f"{self.candidates}/{self.scoring}/{'orientation' if self.orientation else 'no-orientation'}"


def ablation_rows(candidates=CANDIDATE_SOURCES, scorings=ROW_SCORINGS) -> list[Row]:
    """Every valid row for these sources and scorings, orientation off then on."""
    rows = []
    for source in candidates:
        for scoring in scorings:
            if scoring == "oracle" and source != "gt":
                continue
            rows.extend(Row(source, scoring, orientation) for orientation in (False, True))
    if not rows:
        raise ValueError("no valid evaluation row (the oracle scorer needs candidates 'gt')")
    return rows


def _group_by_image(samples) -> dict:
    groups: dict = {}
    for index, sample in enumerate(samples):
        groups.setdefault(sample.image, []).append(index)
    return groups


def _gt_candidates(sample: ReferSample, height: int, width: int):
    """(masks (M, H, W) bool, categories list, kept indices) of the non-empty ground-truth candidates."""
    masks, cats, kept = [], [], []
    for i, ann in enumerate(sample.candidates or []):
        m = annotation_mask(ann, height, width)
        if m.any():
            masks.append(m)
            cats.append((sample.candidate_categories or [None] * len(sample.candidates))[i])
            kept.append(i)
    shape = (0, height, width)
    return (np.stack(masks) if masks else np.zeros(shape, bool)), cats, kept


def _text_features_batch(embedder, expressions) -> list:
    """[(noun prompt (D,), sentence (D,)), ...] for many expressions in one CLIP text batch
    (same vectors as core.refer.text_features, fewer model calls)."""
    texts = [e.noun_prompt for e in expressions] + [e.text.strip() for e in expressions]
    feats = embedder.embed_texts(texts)
    n = len(expressions)
    return [(feats[i], feats[n + i]) for i in range(n)]


def evaluate(dataset: ReferDataset, rows, settings: GroundingSettings | None = None, *,
             segmenter=None, embedder=None, progress: bool = False, models: str | None = None,
             untrained: bool | None = None) -> dict:
    """Ground every sample under every row and report oIoU / mIoU (see the module docstring).

    rows: list of :class:`Row`; settings: the grounding settings shared by all rows (scoring
    and orientation are set per row); segmenter: needed for 'sam' rows; embedder: needed for
    local / global / mixed rows. Per image, candidates and their CLIP features are computed once
    and shared by all its sentences and rows. A sample where SAM finds no candidate counts as
    an empty prediction (IoU 0). Returns the report dict (JSON-friendly).
    """
    from core.images import load_image
    from core.masks import intersection_and_union
    from core.views import mask_to_box

    settings = settings or GroundingSettings()
    rows = list(rows)
    if not rows:
        raise ValueError("no rows to evaluate")
    if len(dataset) == 0:
        raise ValueError(f"dataset {dataset.name} has no samples")
    if any(r.candidates == "gt" for r in rows) and any(s.candidates is None for s in dataset.samples):
        raise ValueError(f"{dataset.name} has no ground-truth candidates for some samples: use --candidates sam")
    if any(r.scoring == "oracle" for r in rows) and any(s.category is None or s.candidate_categories is None
                                                       for s in dataset.samples):
        raise ValueError(f"{dataset.name} lacks categories for the oracle scorer: drop 'oracle' from the scorings")
    clip_rows = [r for r in rows if r.scoring != "oracle"]
    if clip_rows and embedder is None:
        raise ValueError("CLIP scoring rows need an embedder")
    if any(r.candidates == "sam" for r in rows) and segmenter is None:
        raise ValueError("'sam' rows need a segmenter")
    need_local = any(r.scoring in ("local", "mixed") for r in rows)
    need_global = any(r.scoring in ("global", "mixed") for r in rows)
    row_settings = [settings.with_(orientation=r.orientation,
                                   scoring=r.scoring if r.scoring != "oracle" else settings.scoring) for r in rows]

    n = len(dataset)
    inter = np.zeros((len(rows), n), dtype=np.int64)
    union = np.zeros((len(rows), n), dtype=np.int64)
    chosen_target = np.full((len(rows), n), -1, dtype=np.int64)  # gt rows: 1 when the target was chosen
    has_direction = np.zeros(n, dtype=bool)
    n_candidates = {"gt": [], "sam": []}
    sam_failures = 0
    groups = _group_by_image(dataset.samples)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc=f"refer {dataset.name}", unit="sentence", file=sys.stderr)
    started = time.perf_counter()
    for path, indices in groups.items():
        image = load_image(Path(path))
        height, width = image.shape[:2]
        sources: dict = {}
        if any(r.candidates == "gt" for r in rows):
            masks, cats, kept = _gt_candidates(dataset.samples[indices[0]], height, width)
            sources["gt"] = (masks, cats, kept)
            n_candidates["gt"].append(len(masks))
        if any(r.candidates == "sam" for r in rows):
            try:
                masks, _ = sam_candidates(segmenter, image, settings)
            except ValueError:
                masks = np.zeros((0, height, width), bool)
            sources["sam"] = (masks, None, None)
            n_candidates["sam"].append(len(masks))
        feats = {}
        for source, (masks, _, _) in sources.items():
            if len(masks) and any(r.candidates == source for r in clip_rows):
                feats[source] = embed_candidates(embedder, image, masks, local_view=settings.local_view,
                                                 global_emphasis=settings.global_emphasis,
                                                 batch_size=settings.batch_size,
                                                 need_local=need_local, need_global=need_global)
        boxes = {s: (np.stack([mask_to_box(m) for m in m_]) if len(m_) else np.zeros((0, 4), np.float32))
                 for s, (m_, _, _) in sources.items()}
        expressions = [parse(dataset.samples[idx].sentence) for idx in indices]
        texts = _text_features_batch(embedder, expressions) if clip_rows else [None] * len(indices)
        for idx, expression, text in zip(indices, expressions, texts):
            sample = dataset.samples[idx]
            has_direction[idx] = expression.direction is not None
            gt_mask = annotation_mask(sample.target, height, width)
            for r, (row, rs) in enumerate(zip(rows, row_settings)):
                masks, cats, kept = sources[row.candidates]
                if row.scoring == "oracle":
                    pick = np.array([i for i, c in enumerate(cats) if c == sample.category], dtype=np.int64)
                    cand_masks, cand_boxes = masks[pick], boxes["gt"][pick]
                    scores = np.ones(len(pick), np.float32)
                    local = global_ = np.full(len(pick), np.nan, np.float32)
                    source_index = pick
                else:
                    cand_masks, cand_boxes = masks, boxes[row.candidates]
                    f = feats.get(row.candidates)
                    local = f.local @ text[0] if f is not None and need_local else np.zeros(len(masks), np.float32)
                    global_ = f.global_ @ text[1] if f is not None and need_global else np.zeros(len(masks), np.float32)
                    scores = mix_scores(local, global_, row.scoring, settings.global_weight)
                    source_index = None
                if len(cand_masks) == 0:
                    if row.candidates == "sam":
                        sam_failures += 1
                    prediction = np.zeros((height, width), bool)
                else:
                    g = rank_and_choose(expression, cand_masks, cand_boxes, scores, local, global_, rs,
                                        (width, height), source_index=source_index)
                    prediction = g.mask
                    if row.candidates == "gt" and sample.target_index is not None:
                        chosen = kept[int(g.source_index[g.chosen])]
                        chosen_target[r, idx] = int(chosen == sample.target_index)
                inter[r, idx], union[r, idx] = intersection_and_union(prediction, gt_mask)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - started
    results = []
    for r, row in enumerate(rows):
        entry = {"row": row.name, "candidates": row.candidates, "scoring": row.scoring,
                 "orientation": row.orientation,
                 "all": iou_metrics(inter[r], union[r]),
                 "with_direction": iou_metrics(inter[r, has_direction], union[r, has_direction]),
                 "without_direction": iou_metrics(inter[r, ~has_direction], union[r, ~has_direction])}
        if row.candidates == "gt":
            known = chosen_target[r] >= 0
            entry["target_chosen"] = float(100 * chosen_target[r, known].mean()) if known.any() else None
        results.append(entry)
    return {
        "dataset": dataset.name, "split": dataset.split, "source": dataset.source,
        "n_samples": n, "n_with_direction": int(has_direction.sum()), "n_images": len(groups),
        "models": models, "untrained": untrained,
        "settings": {k: v for k, v in asdict(settings).items() if k not in ("scoring", "orientation")},
        "candidates_per_image": {s: (float(np.mean(v)) if v else None) for s, v in n_candidates.items()},
        "sam_failures": sam_failures, "seconds": round(seconds, 2),
        "results": results, "published": PUBLISHED,
        "per_sample": {"ref_id": [s.ref_id for s in dataset.samples], "has_direction": has_direction.tolist(),
                       "intersection": inter.tolist(), "union": union.tolist()},
    }


# ----------------------------------------------------------------------------- report


def _fmt(value) -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.2f}"


def markdown_table(report: dict) -> str:
    """The results as a Markdown table, headed by the dataset, split and models they are on."""
    lines = [
        f"Referring segmentation on {report['dataset']}, split {report['split']}: {report['n_samples']} sentences "
        f"({report['n_with_direction']} with a direction word) in {report['n_images']} images.",
        f"Models: {report['models'] or 'none (oracle rows only)'}.",
        "",
        "| candidates | scoring | orientation | oIoU | mIoU | Pr@0.5 | oIoU (dir.) | mIoU (dir.) | target chosen % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["results"]:
        a, d = row["all"], row["with_direction"]
        lines.append(f"| {row['candidates']} | {row['scoring']} | {'on' if row['orientation'] else 'off'} | "
                     f"{_fmt(a['oIoU'])} | {_fmt(a['mIoU'])} | {_fmt(a['pr@0.5'])} | {_fmt(d['oIoU'])} | "
                     f"{_fmt(d['mIoU'])} | {_fmt(row.get('target_chosen'))} |")
    lines += ["", "Published (other data; for orientation only):"]
    for p in report["published"]:
        lines.append(f"- {p['method']}: {p['dataset']} {p['split']}: oIoU {_fmt(p['oIoU'])}"
                     + (f", mIoU {_fmt(p['mIoU'])}" if p["mIoU"] is not None else ""))
    if report.get("untrained"):
        lines += ["", "UNTRAINED weights: CLIP/SAM rows measure the pipeline, not the method."]
    return "\n".join(lines)


def write_report(report: dict, out) -> list[Path]:
    """report.json and report.md in ``out`` (created)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "report.json", out / "report.md"
    json_path.write_text(json.dumps(report, indent=1))
    md_path.write_text(markdown_table(report) + "\n")
    return [json_path, md_path]


# ----------------------------------------------------------------------------- command line


def dataset_from_args(args) -> ReferDataset:
    """The dataset the flags name: --refs/--instances/--images, --jsonl or --synthetic-coco."""
    chosen = [bool(args.refs), bool(args.jsonl), bool(args.synthetic_coco)]
    if sum(chosen) != 1:
        raise ValueError("give exactly one of --refs (with --instances and --images), --jsonl or --synthetic-coco")
    if args.refs:
        if not args.instances or not args.images:
            raise ValueError("--refs needs --instances (COCO instances.json) and --images (COCO train2014 folder)")
        dataset = read_refcoco(args.refs, args.instances, args.images, split=args.split)
    elif args.jsonl:
        dataset = read_jsonl(args.jsonl, images_dir=args.images, split=args.split)
    else:
        dataset = synthetic_from_coco(args.synthetic_coco, max_same=args.max_same, min_gap=args.min_gap,
                                      seed=args.seed, limit_images=args.limit_images or None)
    if args.limit:
        dataset.samples = dataset.samples[:args.limit]
    return dataset


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def command(args) -> int:
    """`python -m core evaluate refer`: table on stderr, report.json/.md in --out, summary JSON on stdout."""
    from core.refer import settings_from_args

    dataset = dataset_from_args(args)
    if args.write_jsonl:
        print(f"wrote {write_jsonl(dataset, args.write_jsonl)} ({len(dataset)} samples)", file=sys.stderr)
    rows = ablation_rows(_csv(args.candidates), _csv(args.scorings))
    settings = settings_from_args(args)
    segmenter = embedder = models = None
    untrained = None
    if any(r.scoring != "oracle" for r in rows):
        from core.cli import engine_from_args

        engine = engine_from_args(args)
        embedder = engine.embedder
        if any(r.candidates == "sam" for r in rows):
            segmenter = engine.segmenter
        models, untrained = engine.label, engine.untrained
    report = evaluate(dataset, rows, settings, segmenter=segmenter, embedder=embedder,
                      progress=not args.quiet, models=models, untrained=untrained)
    written = write_report(report, args.out)
    print(markdown_table(report), file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    print(json.dumps({"out": str(args.out), "dataset": report["dataset"], "split": report["split"],
                      "n_samples": report["n_samples"], "n_with_direction": report["n_with_direction"],
                      "models": models, "results": [{"row": r["row"], "oIoU": r["all"]["oIoU"],
                                                     "mIoU": r["all"]["mIoU"],
                                                     "oIoU_direction": r["with_direction"]["oIoU"],
                                                     "mIoU_direction": r["with_direction"]["mIoU"]}
                                                    for r in report["results"]]}))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `evaluate refer`."""
    data = parser.add_argument_group("data (one of --refs, --jsonl, --synthetic-coco)")
    data.add_argument("--refs", help="RefCOCO-family refs pickle, e.g. refcocog/refs(umd).p")
    data.add_argument("--instances", help="with --refs: the instances.json beside it")
    data.add_argument("--images", help="image folder (--refs: COCO train2014; --jsonl: base of relative paths)")
    data.add_argument("--split", help="keep this split only (val, testA, test, ...)")
    data.add_argument("--jsonl", help="JSON-lines samples (see `evaluate refer --help` description)")
    data.add_argument("--synthetic-coco", help="generate sentences from a COCO folder (images/ + instances.json)")
    data.add_argument("--max-same", type=int, default=3, help="synthetic: at most this many objects of the category")
    data.add_argument("--min-gap", type=float, default=0.05, help="synthetic: least centre gap, fraction of the image")
    data.add_argument("--seed", type=int, default=0, help="synthetic: template seed (default: %(default)s)")
    data.add_argument("--limit-images", type=int, default=0, help="synthetic: first N images only (0 = all)")
    data.add_argument("--limit", type=int, default=0, help="first N sentences only (0 = all)")
    data.add_argument("--write-jsonl", help="also save the samples in the JSON-lines format here")
    parser.add_argument("--candidates", default="gt,sam", help="candidate sources: gt,sam (default: %(default)s)")
    parser.add_argument("--scorings", default="oracle,local,global,mixed",
                        help="scorings: oracle,local,global,mixed (default: %(default)s)")
    parser.add_argument("--out", default="runs/refer", help="output folder (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    from core.cli import add_model_arguments
    from core.refer import add_grounding_arguments

    add_grounding_arguments(parser, ablation_flags=False)
    add_model_arguments(parser)


def register_evaluate(subparsers) -> None:
    """Add `refer` to the `evaluate` sub-subcommands."""
    parser = subparsers.add_parser("refer", help="referring segmentation oIoU / mIoU per ablation row",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(func=command)
