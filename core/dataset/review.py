"""Reviewing proposals: merging a run's proposals into an image's objects without touching
what a person made or reviewed, and the review queue ordered by doubt.

Doubt of a proposal (higher = look first), the sum of:
- low class probability: 1 - score (score None counts 0.5);
- a close second class: 1 - margin (top-1 minus top-2 probability; when known);
- tiny: 1 when the mask covers less than `tiny_fraction` of the image;
- overlap: the largest share of its area inside another object of the image (0..1).
Each term past its `why` threshold is named in the reasons shown with the item.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.io.labels import LabelledObject


@dataclass(frozen=True)
class DoubtSettings:
    """tiny_fraction: area share under which a mask is tiny; low_score / close_margin /
    overlap_share: the thresholds past which a term is named as a reason."""

    tiny_fraction: float = 0.001
    low_score: float = 0.5
    close_margin: float = 0.2
    overlap_share: float = 0.5


@dataclass(frozen=True)
class Doubt:
    """One unreviewed proposal in the queue: its image, index in the image's objects, class,
    doubt (higher first) and the reasons."""

    file_name: str
    index: int
    category: str
    doubt: float
    reasons: tuple[str, ...]


def merge_proposals(objects: list[LabelledObject], proposals: list[LabelledObject],
                    same_iou: float = 0.5) -> list[LabelledObject]:
    """The image's objects after a run: every user or reviewed object kept as it is; earlier
    unreviewed proposals replaced by this run's; a new proposal overlapping a kept object
    (IoU >= same_iou) dropped: proposals never overwrite a person's work."""
    kept = [o for o in objects if o.origin == "user" or o.reviewed]
    masks = [o.mask for o in kept]
    added = []
    for p in proposals:
        if not any(_iou(p.mask, m) >= same_iou for m in masks):
            added.append(p)
            masks.append(p.mask)
    return kept + added


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def doubts(file_name: str, objects: list[LabelledObject], settings: DoubtSettings | None = None) -> list[Doubt]:
    """The unreviewed proposals of one image with their doubt and reasons."""
    settings = settings or DoubtSettings()
    out = []
    areas = [max(int(o.mask.sum()), 1) for o in objects]
    for i, obj in enumerate(objects):
        if obj.reviewed:
            continue
        score = 0.5 if obj.score is None else float(obj.score)
        terms, reasons = 1.0 - score, []
        if score < settings.low_score:
            reasons.append(f"low class probability {score:.2f}")
        if obj.margin is not None:
            terms += 1.0 - float(obj.margin)
            if obj.margin < settings.close_margin:
                reasons.append(f"close second class (margin {obj.margin:.2f})")
        share = areas[i] / obj.mask.size
        if share < settings.tiny_fraction:
            terms += 1.0
            reasons.append(f"tiny ({areas[i]} px)")
        inside = max((np.logical_and(obj.mask, o.mask).sum() / areas[i] for j, o in enumerate(objects) if j != i),
                     default=0.0)
        terms += float(inside)
        if inside >= settings.overlap_share:
            reasons.append(f"{inside:.0%} inside another object")
        out.append(Doubt(file_name, i, obj.category, round(terms, 4), tuple(reasons) or ("no flag raised",)))
    return out


def review_queue(items: list[Doubt]) -> list[Doubt]:
    """Doubts, most doubtful first (ties: file name, then index)."""
    return sorted(items, key=lambda d: (-d.doubt, d.file_name, d.index))
