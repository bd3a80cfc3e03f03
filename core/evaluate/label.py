"""Evaluate labelling and find-all on COCO with COCO's own definitions.

Rows (like `evaluate refer`), each on the same images:

- ``oracle``: ground-truth masks + ground-truth labels (must give AP 1.0 and PQ 1.0: the
  plumbing is right);
- ``gt-masks+clip``: ground-truth masks labelled by CLIP (the labelling alone);
- ``sam+clip``: SAM's automatic masks labelled by CLIP (the whole system).

Instances are scored with pycocotools' COCOeval (segm AP, AP50, AR@100), panoptic quality
with `core.evaluate.panoptic` (things only where, as in COCO instance files, no stuff is
annotated: unannotated pixels are void). Find-all is scored per phrase (each category
present in an image, as its name): instances matched to that category's ground truth at
mask IoU >= 0.5, micro precision and recall. With untrained weights the CLIP rows are
chance level by design.
"""
from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from core.evaluate.panoptic import PanopticQuality
from core.find.instances import FindSettings, find_all
from core.find.labels import (LabelSettings, Labelling, given_labels, id_map_from_masks, instances_of,
                              label_candidates, panoptic)
from core.find.vocab import Vocabulary, coco_panoptic
from core.io.coco import CocoData, read_coco
from core.io.images import load_image
from core.io.masks import coco_ann_to_mask, mask_iou, mask_to_rle
from core.refer.ground import Candidates, GroundingSettings, image_candidates
from core.sam.automask import AutoMaskSettings

ROWS = ("oracle", "gt-masks+clip", "sam+clip")


@dataclass(frozen=True)
class LabelEvalSettings:
    """rows: which of `ROWS`; limit: images (None: all); automask: SAM's automatic masks for
    the sam+clip row; find: also score find-all per phrase."""

    rows: tuple[str, ...] = ROWS
    limit: int | None = None
    automask: AutoMaskSettings = field(default_factory=AutoMaskSettings)
    find: bool = True


def gt_masks(coco: CocoData, image_id: int, hw) -> tuple[np.ndarray, list[int]]:
    """(N, H, W) bool masks and category ids of an image's non-crowd annotations."""
    anns = [a for a in coco.annotations(image_id) if not a.get("iscrowd")]
    masks = np.stack([coco_ann_to_mask(a, *hw) for a in anns]) if anns else np.zeros((0, *hw), bool)
    return masks, [int(a["category_id"]) for a in anns]


def coco_results(image_id: int, labelling: Labelling) -> list[dict]:
    """COCOeval result dicts of a labelling's things."""
    inst = instances_of(labelling)
    return [{"image_id": int(image_id), "category_id": int(c), "segmentation": mask_to_rle(m), "score": float(s)}
            for m, c, s in zip(inst.masks, inst.category_ids, inst.scores)]


def panoptic_of_gt(masks: np.ndarray, cats: list[int]) -> tuple[np.ndarray, dict[int, int], np.ndarray]:
    """Ground truth as non-overlapping segments: (id map, {id: category}, the segments' masks)."""
    ids = id_map_from_masks(masks)
    present = [i for i in range(len(masks)) if (ids == i + 1).any()]
    seg_masks = np.stack([ids == i + 1 for i in present]) if present else np.zeros((0, *ids.shape), bool)
    return ids, {i + 1: cats[i] for i in present}, seg_masks


class RowScores:
    """The COCOeval results and panoptic counts of one row over the images."""

    def __init__(self, isthing: dict[int, bool]):
        self.results: list[dict] = []
        self.pq = PanopticQuality(isthing=dict(isthing))

    def add(self, image_id: int, labelling: Labelling, gt_ids, gt_cats, settings: LabelSettings) -> None:
        self.results += coco_results(image_id, labelling)
        pan = panoptic(labelling, settings)
        self.pq.add_image(gt_ids, gt_cats, pan.id_map, {s.id: s.category_id for s in pan.segments})


def coco_ap(coco_path: Path, results: list[dict], image_ids: list[int]) -> dict:
    """pycocotools segm AP, AP50, AR@100 on `image_ids` (zeros when nothing was predicted)."""
    if not results:
        return {"ap": 0.0, "ap50": 0.0, "ar100": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(coco_path))
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "segm")
        ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"ap": float(ev.stats[0]), "ap50": float(ev.stats[1]), "ar100": float(ev.stats[8])}


def find_counts(candidates: Candidates, embedder, gt_masks_: np.ndarray, cats: list[int],
                names: dict[int, str]) -> tuple[int, int, int]:
    """(true positives, predicted, ground truth) of find-all with each present category's name."""
    tp = pred = total = 0
    for cat in sorted(set(cats)):
        found = find_all(candidates, embedder, names[cat], FindSettings())
        truth = [gt_masks_[i] for i, c in enumerate(cats) if c == cat]
        tp += _greedy_matches(found.masks, truth)
        pred, total = pred + found.count, total + len(truth)
    return tp, pred, total


def _greedy_matches(found: np.ndarray, truth: list[np.ndarray]) -> int:
    used, hits = set(), 0
    for m in found:
        ious = [(mask_iou(m, t), j) for j, t in enumerate(truth) if j not in used]
        best = max(ious, default=(0.0, -1))
        if best[0] >= 0.5:
            used.add(best[1])
            hits += 1
    return hits


def evaluate_labels(coco_path: str | Path, images_dir: str | Path, engine=None,
                    settings: LabelEvalSettings | None = None, label_settings: LabelSettings | None = None,
                    progress: bool = True) -> dict:
    """The rows of the module docstring on the first `limit` images of a COCO instances file."""
    settings, label_settings = settings or LabelEvalSettings(), label_settings or LabelSettings()
    unknown = set(settings.rows) - set(ROWS)
    if unknown:
        raise ValueError(f"unknown rows {sorted(unknown)}; choose from {', '.join(ROWS)}")
    if engine is None and set(settings.rows) - {"oracle"}:
        raise ValueError("the CLIP rows need an engine (models)")
    coco_path, vocab = Path(coco_path), coco_panoptic()
    coco = read_coco(coco_path)
    ids = sorted(coco.images)[: settings.limit] if settings.limit else sorted(coco.images)
    rows = {name: RowScores({c.id: c.isthing for c in vocab}) for name in settings.rows}
    find_rows = {name: [0, 0, 0] for name in settings.rows if name != "oracle" and settings.find}
    for n, image_id in enumerate(ids):
        _evaluate_image(coco, Path(images_dir), image_id, vocab, engine, settings, label_settings, rows, find_rows)
        if progress:
            print(f"[{n + 1}/{len(ids)}] image {image_id}", file=sys.stderr, flush=True)
    return {"images": len(ids), "rows": {name: {**coco_ap(coco_path, r.results, ids), **_pq(r)}
                                         for name, r in rows.items()},
            "find": {name: _precision_recall(*c) for name, c in find_rows.items()},
            "untrained": bool(getattr(engine, "untrained", False)) if engine is not None else None}


def _evaluate_image(coco, images_dir, image_id, vocab: Vocabulary, engine, settings, label_settings, rows, find_rows):
    info = coco.images[image_id]
    hw = (int(info["height"]), int(info["width"]))
    masks, cats = gt_masks(coco, image_id, hw)
    gt_ids, gt_cats, seg_masks = panoptic_of_gt(masks, cats)
    if "oracle" in rows:
        oracle = given_labels(masks, cats, vocab)
        rows["oracle"].results += coco_results(image_id, oracle)
        pan = panoptic(given_labels(seg_masks, list(gt_cats.values()), vocab), LabelSettings(min_pixels=1))
        rows["oracle"].pq.add_image(gt_ids, gt_cats, pan.id_map, {s.id: s.category_id for s in pan.segments})
    clip_rows = [r for r in rows if r != "oracle"]
    if not clip_rows:
        return
    image = load_image(images_dir / info["file_name"])
    grounding = GroundingSettings(automask=settings.automask)
    for name in clip_rows:
        cands = _candidates(name, engine, image, masks, grounding)
        if cands is None:
            continue
        rows[name].add(image_id, label_candidates(cands, engine.embedder, vocab, label_settings), gt_ids, gt_cats,
                       label_settings)
        if name in find_rows and len(masks):
            counts = find_counts(cands, engine.embedder, masks, cats, coco.categories)
            find_rows[name] = [a + b for a, b in zip(find_rows[name], counts)]


def _candidates(row: str, engine, image, masks, grounding: GroundingSettings) -> Candidates | None:
    """The row's candidates: ground-truth masks, or SAM's (None when there are none)."""
    if row == "gt-masks+clip":
        return image_candidates(None, engine.embedder, image, grounding, masks=masks,
                                need_local=True, need_global=False) if len(masks) else None
    try:
        return engine.grounding_candidates(image, grounding)
    except ValueError:          # NoCandidatesError: nothing to label in this image
        return None


def _pq(row: RowScores) -> dict:
    s = row.pq.summary()
    return {"pq": s["all"]["pq"], "sq": s["all"]["sq"], "rq": s["all"]["rq"],
            "pq_things": s["things"]["pq"], "pq_stuff": s["stuff"]["pq"], "categories": s["all"]["n"]}


def _precision_recall(tp: int, pred: int, total: int) -> dict:
    return {"precision": tp / pred if pred else 0.0, "recall": tp / total if total else 0.0,
            "true_positives": tp, "predicted": pred, "ground_truth": total}
