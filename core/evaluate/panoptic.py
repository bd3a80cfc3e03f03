"""Panoptic quality (PQ, SQ, RQ) from its definition (Kirillov et al., "Panoptic Segmentation").

Per category, a predicted and a ground-truth segment match when their IoU is above 0.5
(with non-overlapping segments such a match is unique). Over all images:

    PQ_c = sum of matched IoUs / (TP + FP / 2 + FN / 2) = SQ_c * RQ_c
    SQ_c = sum of matched IoUs / TP,   RQ_c = TP / (TP + FP / 2 + FN / 2)

PQ is the mean of PQ_c over the categories with any TP, FP or FN (also split into things
and stuff). Void pixels (ground truth id 0) are left out of every IoU's union, and a
predicted segment that is more than half void is not counted as a false positive.
Inputs per image: id maps (H, W) int (0 = void) and {segment id: category id}.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np


@dataclass
class CategoryCounts:
    """TP / FP / FN counts and the sum of matched IoUs of one category."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou: float = 0.0

    def pq_sq_rq(self) -> tuple[float, float, float]:
        denom = self.tp + 0.5 * self.fp + 0.5 * self.fn
        if denom == 0:
            return 0.0, 0.0, 0.0
        sq = self.iou / self.tp if self.tp else 0.0
        rq = self.tp / denom
        return sq * rq, sq, rq


@dataclass
class PanopticQuality:
    """Accumulates images; `summary()` gives PQ / SQ / RQ overall, for things and for stuff."""

    isthing: dict[int, bool] = field(default_factory=dict)
    counts: dict[int, CategoryCounts] = field(default_factory=lambda: defaultdict(CategoryCounts))

    def add_image(self, gt_ids: np.ndarray, gt_cats: dict[int, int], pred_ids: np.ndarray,
                  pred_cats: dict[int, int]) -> None:
        """One image: ground-truth and predicted id maps (same shape) and their categories."""
        gt_ids, pred_ids = np.asarray(gt_ids, np.int64), np.asarray(pred_ids, np.int64)
        if gt_ids.shape != pred_ids.shape:
            raise ValueError(f"id maps differ in shape: {gt_ids.shape} vs {pred_ids.shape}")
        gt_area, pred_area, inter, pred_void = _areas(gt_ids, pred_ids)
        matched_gt, matched_pred = set(), set()
        for (g, p), both in inter.items():
            if g not in gt_cats or p not in pred_cats or gt_cats[g] != pred_cats[p]:
                continue
            union = gt_area[g] + pred_area[p] - both - pred_void.get(p, 0)
            iou = both / union if union else 0.0
            if iou > 0.5:
                c = self.counts[gt_cats[g]]
                c.tp, c.iou = c.tp + 1, c.iou + iou
                matched_gt.add(g)
                matched_pred.add(p)
        for g, cat in gt_cats.items():
            if g not in matched_gt and gt_area.get(g, 0):
                self.counts[cat].fn += 1
        for p, cat in pred_cats.items():
            area = pred_area.get(p, 0)
            if p not in matched_pred and area and pred_void.get(p, 0) <= 0.5 * area:
                self.counts[cat].fp += 1

    def per_category(self) -> dict[int, tuple[float, float, float]]:
        return {c: n.pq_sq_rq() for c, n in self.counts.items() if n.tp + n.fp + n.fn}

    def summary(self) -> dict:
        """{"all"|"things"|"stuff": {"pq", "sq", "rq", "n"}} (means over categories; n their count)."""
        per = self.per_category()
        out = {}
        for name, keep in (("all", lambda c: True), ("things", lambda c: self.isthing.get(c, True)),
                           ("stuff", lambda c: not self.isthing.get(c, True))):
            rows = [v for c, v in per.items() if keep(c)]
            out[name] = ({"pq": float(np.mean([r[0] for r in rows])), "sq": float(np.mean([r[1] for r in rows])),
                          "rq": float(np.mean([r[2] for r in rows])), "n": len(rows)} if rows
                         else {"pq": None, "sq": None, "rq": None, "n": 0})
        return out


def _areas(gt_ids: np.ndarray, pred_ids: np.ndarray):
    """Segment areas, intersections {(gt id, pred id): pixels} and each prediction's void pixels."""
    gt_area = dict(zip(*np.unique(gt_ids, return_counts=True)))
    pred_area = dict(zip(*np.unique(pred_ids, return_counts=True)))
    pairs, counts = np.unique(np.stack([gt_ids.ravel(), pred_ids.ravel()]), axis=1, return_counts=True)
    inter, void = {}, {}
    for (g, p), n in zip(pairs.T.tolist(), counts.tolist()):
        if p == 0:
            continue
        if g == 0:
            void[p] = n
        else:
            inter[(g, p)] = n
    gt_area = {int(k): int(v) for k, v in gt_area.items() if k != 0}
    pred_area = {int(k): int(v) for k, v in pred_area.items() if k != 0}
    return gt_area, pred_area, inter, void
