"""Label everything: a label per candidate from a vocabulary, then the three outputs of the
segmentation primer.

- **semantic**: (H, W) int32 category id per pixel (0: unlabelled), the best-scored
  candidate on top where candidates overlap;
- **instances**: the candidates labelled as things, with ids, category ids and scores;
- **panoptic**: every pixel at most once: candidates by score, each keeps the pixels no
  better one took, a segment left with less than `min_kept_fraction` of its mask (or fewer
  than `min_pixels` pixels) is dropped, stuff of one category is merged into one segment,
  unassigned pixels are void (id 0).

Labels come from CLIP: the softmax (at CLIP's temperature) of each candidate's feature
against the vocabulary's prompts; the label is the most probable category and its
probability the score. Conventions: masks (N, H, W) bool; boxes XYXY; bbox in exports COCO
[x, y, w, h].
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.find.instances import candidate_features, softmax_rows
from core.find.vocab import TEXT_FEATURES, Category, Vocabulary, prompt
from core.refer.ground import Candidates


@dataclass(frozen=True)
class LabelSettings:
    """temperature: CLIP's logit scale; min_score: a candidate whose best probability is lower
    stays unlabelled; min_kept_fraction / min_pixels: panoptic overlap resolution (see the
    module docstring); global_weight: mix of the global (in-context) feature, 0..1."""

    temperature: float = 100.0
    min_score: float = 0.0
    min_kept_fraction: float = 0.5
    min_pixels: int = 16
    global_weight: float = 0.0


@dataclass
class Labelling:
    """One image's candidates with labels: masks (N, H, W) bool, boxes (N, 4), labels (N,)
    int64 index into `vocabulary` (-1: unlabelled), scores (N,) float32 probabilities."""

    vocabulary: Vocabulary
    masks: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray

    @property
    def image_hw(self) -> tuple[int, int]:
        return int(self.masks.shape[1]), int(self.masks.shape[2])

    def category(self, i: int) -> Category | None:
        return self.vocabulary[int(self.labels[i])] if self.labels[i] >= 0 else None


def label_probabilities(features: np.ndarray, text: np.ndarray, temperature: float) -> np.ndarray:
    """(N, V) softmax over V prompts of N unit features."""
    return softmax_rows(temperature * (features @ text.T))


def label_candidates(candidates: Candidates, embedder, vocabulary: Vocabulary,
                     settings: LabelSettings | None = None) -> Labelling:
    """Each candidate's most probable category of `vocabulary` (CLIP, zero-shot)."""
    settings = settings or LabelSettings()
    text = TEXT_FEATURES.features(embedder, tuple(prompt(c) for c in vocabulary))
    prob = label_probabilities(candidate_features(candidates, settings.global_weight), text, settings.temperature)
    labels = prob.argmax(axis=1).astype(np.int64)
    scores = prob[np.arange(len(labels)), labels]
    labels[scores < settings.min_score] = -1
    return Labelling(vocabulary, candidates.masks, candidates.boxes, labels, scores.astype(np.float32))


def given_labels(masks: np.ndarray, category_ids, vocabulary: Vocabulary, scores=None) -> Labelling:
    """A `Labelling` of known masks and category ids (e.g. ground truth: the oracle rows)."""
    index = {c.id: i for i, c in enumerate(vocabulary)}
    labels = np.asarray([index.get(int(c), -1) for c in category_ids], dtype=np.int64)
    scores = np.ones(len(labels), np.float32) if scores is None else np.asarray(scores, np.float32)
    masks = np.asarray(masks, dtype=bool)
    return Labelling(vocabulary, masks, _boxes(masks), labels, scores)


def _boxes(masks: np.ndarray) -> np.ndarray:
    out = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if len(xs):
            out[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return out


def semantic_map(labelling: Labelling) -> np.ndarray:
    """(H, W) int32 category id per pixel, 0 where no labelled candidate lies; overlaps go to
    the best-scored candidate."""
    out = np.zeros(labelling.image_hw, np.int32)
    for i in np.argsort(labelling.scores, kind="stable"):          # best painted last
        if labelling.labels[i] >= 0:
            out[labelling.masks[i]] = labelling.category(i).id
    return out


@dataclass
class LabelledInstances:
    """Things with ids 1..K: masks (K, H, W), boxes (K, 4), category ids (K,), scores (K,), names."""

    masks: np.ndarray
    boxes: np.ndarray
    category_ids: np.ndarray
    scores: np.ndarray
    names: list[str] = field(default_factory=list)


def instances_of(labelling: Labelling) -> LabelledInstances:
    """The candidates labelled as things, best score first."""
    keep = [i for i in np.argsort(-labelling.scores, kind="stable")
            if labelling.labels[i] >= 0 and labelling.category(i).isthing]
    keep = np.asarray(keep, dtype=np.int64)
    cats = [labelling.category(i) for i in keep]
    return LabelledInstances(labelling.masks[keep], labelling.boxes[keep],
                             np.asarray([c.id for c in cats], np.int64),
                             labelling.scores[keep], [c.name for c in cats])


@dataclass(frozen=True)
class Segment:
    """One panoptic segment: id (>= 1, its value in the id map), category, area in pixels,
    COCO bbox [x, y, w, h], whether it is a thing, and the score it was chosen by."""

    id: int
    category_id: int
    area: int
    bbox: tuple[float, float, float, float]
    isthing: bool
    score: float


@dataclass
class Panoptic:
    """id_map (H, W) int32: segment id per pixel, 0 void; segments in id order."""

    id_map: np.ndarray
    segments: list[Segment]


def panoptic(labelling: Labelling, settings: LabelSettings | None = None) -> Panoptic:
    """Every pixel at most once (see the module docstring)."""
    settings = settings or LabelSettings()
    h, w = labelling.image_hw
    id_map = np.zeros((h, w), np.int32)
    stuff_ids: dict[int, int] = {}
    scores: dict[int, tuple[int, bool, float]] = {}
    next_id = 1
    for i in np.argsort(-labelling.scores, kind="stable"):
        cat = labelling.category(i)
        if cat is None:
            continue
        free = labelling.masks[i] & (id_map == 0)
        area = int(labelling.masks[i].sum())
        if not free.any() or free.sum() < max(settings.min_pixels, settings.min_kept_fraction * area):
            continue
        seg_id = stuff_ids.get(cat.id) if not cat.isthing else None
        if seg_id is None:
            seg_id, next_id = next_id, next_id + 1
            if not cat.isthing:
                stuff_ids[cat.id] = seg_id
            scores[seg_id] = (cat.id, cat.isthing, float(labelling.scores[i]))
        id_map[free] = seg_id
    return Panoptic(id_map, [_segment(id_map, seg_id, *scores[seg_id]) for seg_id in sorted(scores)])


def _segment(id_map: np.ndarray, seg_id: int, category_id: int, isthing: bool, score: float) -> Segment:
    ys, xs = np.nonzero(id_map == seg_id)
    bbox = (float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min()))
    return Segment(seg_id, category_id, int(len(xs)), bbox, isthing, score)


def id_map_from_masks(masks: np.ndarray, order=None) -> np.ndarray:
    """(H, W) int32 ids 1..N of N masks painted in `order` (later ones on top; default by area,
    largest first so small objects stay visible): non-overlapping segments from overlapping
    instance masks. Pixels of no mask are 0."""
    masks = np.asarray(masks, dtype=bool)
    out = np.zeros(masks.shape[1:], np.int32)
    if not len(masks):
        return out
    if order is None:
        order = np.argsort(-masks.reshape(len(masks), -1).sum(axis=1), kind="stable")
    for i in order:
        out[masks[i]] = i + 1
    return out
