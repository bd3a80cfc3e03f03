"""Every instance of a phrase ("the dogs") or of an example object ("more like this"), among
one image's candidates (SAM's automatic masks with their CLIP features, `core.analysis`).

Which candidates count is decided against competitors, not by one cosine threshold:

- a phrase: each candidate's CLIP feature is scored against the phrase and a competing
  vocabulary (COCO-panoptic's names minus the phrase's own noun, plus a few background
  prompts); a softmax at CLIP's temperature gives P(phrase) per candidate, and a candidate
  is an instance when P(phrase) >= `min_probability` (the phrase beats the rest together);
- an example: the candidates' similarities to the example are split in two groups at the
  widest gap; the upper group counts when it stands out (`like_min_gap`) and is similar
  enough (`like_min_similarity`).

A candidate mostly inside an accepted one (`part_inside`) is a part of it and dropped. A
direction word ("the dogs on the left") orders the instances from that side.
Conventions: masks (N, H, W) bool, boxes XYXY pixels, features (N, D) float32.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.embed import l2_normalise
from core.find.vocab import BACKGROUND_PROMPTS, TEXT_FEATURES, Vocabulary, coco_panoptic, prompt
from core.refer.choose import direction_order
from core.refer.ground import Candidates, image_candidates
from core.refer.parse import Expression, parse


@dataclass(frozen=True)
class FindSettings:
    """How instances are decided (see the module docstring).

    temperature: CLIP's logit scale (100) applied to cosines before the softmax;
    min_probability: P(phrase) a candidate needs against the competing vocabulary;
    part_inside: a candidate with at least this fraction of its area inside an accepted
        instance is a part of it (dropped);
    global_weight: weight of the candidates' global (in-context) feature mixed with the
        local (object) one, 0..1;
    like_min_similarity / like_min_gap: for an example, the lowest cosine an instance may
        have and how far the upper group's lowest must lie above the lower group's highest.
    """

    temperature: float = 100.0
    min_probability: float = 0.5
    part_inside: float = 0.9
    global_weight: float = 0.0
    like_min_similarity: float = 0.7
    like_min_gap: float = 0.03

    def __post_init__(self) -> None:
        for name in ("min_probability", "part_inside", "global_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")


@dataclass
class Instances:
    """The instances found: `label` what they are ("dog", or "like the example"); masks (K, H, W)
    bool, boxes (K, 4) XYXY, scores (K,) probability or similarity, index (K,) candidate ids,
    in answer order (from the direction's side when one was given, else best first)."""

    phrase: str
    label: str
    masks: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    index: np.ndarray
    direction: str | None = None

    @property
    def count(self) -> int:
        return int(len(self.index))

    def summary(self) -> str:
        """"3 dogs" / "1 dog" / "no dog"."""
        noun = self.label
        if self.count == 0:
            return f"no {noun}"
        return f"{self.count} {noun}{'' if self.count == 1 or noun.endswith('s') else 's'}"


def candidate_features(candidates: Candidates, global_weight: float = 0.0) -> np.ndarray:
    """(N, D) unit features of the candidates: local, mixed with global by `global_weight`."""
    local = l2_normalise(candidates.local)
    if global_weight <= 0 or candidates.global_.shape[1] == 0:
        return local
    return l2_normalise((1 - global_weight) * local + global_weight * l2_normalise(candidates.global_))


def competitors(noun: str, vocabulary: Vocabulary | None = None) -> tuple[str, ...]:
    """Prompts a phrase is decided against: the vocabulary's names other than `noun`, and
    the background prompts."""
    vocabulary = vocabulary or coco_panoptic()
    names = [prompt(c) for c in vocabulary if c.words != noun and c.name != noun]
    return tuple(names) + tuple(f"a photo of {p}." for p in BACKGROUND_PROMPTS)


def phrase_probabilities(features: np.ndarray, phrase_feature: np.ndarray, others: np.ndarray,
                         temperature: float) -> np.ndarray:
    """(N,) softmax probability of the phrase against `others` (M, D) for each of N unit features."""
    scores = np.concatenate([features @ phrase_feature[:, None], features @ others.T], axis=1)
    return softmax_rows(temperature * scores)[:, 0]


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    """(N, K) float32 softmax of each row of (N, K) logits."""
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def drop_parts(masks: np.ndarray, order: np.ndarray, part_inside: float) -> np.ndarray:
    """`order` (candidate ids, best first) without those mostly inside a bigger accepted one."""
    by_area = sorted(order.tolist(), key=lambda i: -int(masks[i].sum()))
    kept: list[int] = []
    for i in by_area:
        area = max(int(masks[i].sum()), 1)
        if not any((masks[i] & masks[j]).sum() / area >= part_inside for j in kept):
            kept.append(i)
    kept_set = set(kept)
    return np.asarray([i for i in order.tolist() if i in kept_set], dtype=np.int64)


def _answer(phrase: str, label: str, candidates: Candidates, chosen: np.ndarray, scores: np.ndarray,
            direction: str | None) -> Instances:
    """The chosen candidates as `Instances`, ordered from `direction` (else by score)."""
    boxes = candidates.boxes[chosen]
    if direction and len(chosen):
        order = direction_order(direction, boxes, scores[chosen], candidates.image_hw)
    else:
        order = np.argsort(-scores[chosen], kind="stable")
    chosen = chosen[order]
    return Instances(phrase, label, candidates.masks[chosen], candidates.boxes[chosen],
                     scores[chosen].astype(np.float32), chosen, direction)


def find_all(candidates: Candidates, embedder, phrase: str | Expression,
             settings: FindSettings | None = None, vocabulary: Vocabulary | None = None) -> Instances:
    """Every candidate the phrase names ("dogs", "all the cups", "the cats on the left").

    The head noun (lemmatised: plurals and "all the ..." understood) is what is looked for;
    `vocabulary` (default COCO-panoptic) supplies the competitors. ValueError for an empty
    phrase or one with no noun."""
    settings = settings or FindSettings()
    expression = phrase if isinstance(phrase, Expression) else parse(phrase)
    if not expression.noun:
        raise ValueError(f"no noun found in {expression.text[:60]!r}: say what to find, e.g. 'dogs'")
    feats = candidate_features(candidates, settings.global_weight)
    target = TEXT_FEATURES.features(embedder, (f"a photo of a {expression.noun}.",))[0]
    others = TEXT_FEATURES.features(embedder, competitors(expression.noun, vocabulary))
    prob = phrase_probabilities(feats, target, others, settings.temperature)
    accepted = np.flatnonzero(prob >= settings.min_probability)
    accepted = accepted[np.argsort(-prob[accepted], kind="stable")]
    chosen = drop_parts(candidates.masks, accepted, settings.part_inside)
    return _answer(expression.text, expression.noun, candidates, chosen, prob, expression.direction)


def split_at_widest_gap(similarity: np.ndarray) -> tuple[float, float]:
    """(lowest of the upper group, highest of the lower group) of the values split at their
    widest gap; (max, -inf) for one value."""
    values = np.sort(np.asarray(similarity, dtype=np.float64))[::-1]
    if len(values) < 2:
        return float(values[0]), float("-inf")
    gaps = values[:-1] - values[1:]
    cut = int(np.argmax(gaps))
    return float(values[cut]), float(values[cut + 1])


def find_like(candidates: Candidates, example_feature: np.ndarray, settings: FindSettings | None = None,
              direction: str | None = None) -> Instances:
    """The candidates like an example object: `example_feature` (D,) its CLIP feature of the
    same kind as the candidates' (e.g. from `core.find.instances.example_feature`)."""
    settings = settings or FindSettings()
    feats = candidate_features(candidates, settings.global_weight)
    example = l2_normalise(np.asarray(example_feature, dtype=np.float32)[None])[0]
    sim = (feats @ example).astype(np.float32)
    low_top, high_rest = split_at_widest_gap(sim)
    if low_top - high_rest < settings.like_min_gap:
        low_top = float(sim.max()) if len(sim) else 1.0   # no clear group: only the best match
    accepted = np.flatnonzero((sim >= low_top) & (sim >= settings.like_min_similarity))
    accepted = accepted[np.argsort(-sim[accepted], kind="stable")]
    chosen = drop_parts(candidates.masks, accepted, settings.part_inside)
    return _answer("more like this", "object like the example", candidates, chosen, sim, direction)


def example_feature(embedder, image: np.ndarray, mask: np.ndarray, settings) -> np.ndarray:
    """(D,) the example object's local CLIP feature, made as the candidates' are
    (`settings`: the core.refer.GroundingSettings the candidates were computed with)."""
    one = image_candidates(None, embedder, image, settings, masks=np.asarray(mask, bool)[None],
                           need_local=True, need_global=False)
    return one.local[0]
