"""Proposals for one image from a job: a phrase (find-all), examples (more like these) and a
vocabulary (label everything), all read from ONE analysis of the image (SAM's automatic masks
and their CLIP features, `core.analysis`): one SAM pass and one CLIP pass per image whatever
the mix; the text and example features are computed once per job.

Acceptance rules: a phrase keeps the candidates with P(phrase) >= FindSettings.min_probability
against the competing vocabulary; an example category keeps the candidates
`core.find.instances.find_like` accepts for the mean feature of its examples (the upper group
at the widest similarity gap, cosine >= like_min_similarity); a vocabulary gives every
candidate its most probable category (probability >= LabelSettings.min_score), candidates
mostly inside a better one dropped. Across the three, a mask that repeats an earlier one
(IoU >= `same_iou`) is dropped: phrase first, then examples, then vocabulary.

Conventions: image (H, W, 3) uint8 RGB; masks (H, W) bool; features (D,) float32 unit.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.embed import l2_normalise
from core.find.instances import FindSettings, candidate_features, drop_parts, example_feature, find_all, find_like
from core.find.labels import LabelSettings, label_probabilities
from core.find.vocab import TEXT_FEATURES, Vocabulary, parse_vocabulary, prompt
from core.io.labels import LabelledObject
from core.io.masks import mask_iou
from core.refer.ground import Candidates, GroundingSettings, NoCandidatesError
from core.refer.parse import parse
from core.sam.automask import AutoMaskSettings


@dataclass(frozen=True)
class Example:
    """A named example object: category and its CLIP feature (D,) float32 (see `example_features`)."""

    category: str
    feature: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class LabelJob:
    """What to propose on every image: phrase ("dogs"), examples, vocabulary ("cat, dog" or
    "coco-panoptic"); at least one. Settings of each stage as the single-image tools use them."""

    phrase: str | None = None
    examples: tuple[Example, ...] = ()
    vocabulary: str | None = None
    automask: AutoMaskSettings = field(default_factory=AutoMaskSettings)
    find: FindSettings = field(default_factory=FindSettings)
    label: LabelSettings = field(default_factory=LabelSettings)
    same_iou: float = 0.9

    def __post_init__(self) -> None:
        if not ((self.phrase or "").strip() or self.examples or (self.vocabulary or "").strip()):
            raise ValueError("say what to label: a phrase (--find), examples (--like) or a vocabulary (--vocab)")
        if self.phrase and self.phrase.strip() and not parse(self.phrase).noun:
            raise ValueError(f"no noun found in {self.phrase[:60]!r}: say what to find, e.g. 'dogs'")

    @property
    def grounding(self) -> GroundingSettings:
        return GroundingSettings(automask=self.automask)

    def vocab(self) -> Vocabulary | None:
        return parse_vocabulary(self.vocabulary) if (self.vocabulary or "").strip() else None

    def categories(self) -> list[str]:
        """The job's category names in order: the phrase's noun, the examples', the vocabulary's."""
        names = [parse(self.phrase).noun] if (self.phrase or "").strip() else []
        names += [e.category for e in self.examples]
        vocab = self.vocab()
        names += [c.name for c in vocab] if vocab else []
        return list(dict.fromkeys(names))

    def fingerprint(self) -> dict:
        """What makes two runs equal (for resuming): the settings and the example features' digest."""
        import hashlib

        digest = hashlib.sha1()
        for e in self.examples:
            digest.update(e.category.encode())
            digest.update(np.asarray(e.feature, np.float32).tobytes())
        return {"phrase": self.phrase or "", "vocabulary": self.vocabulary or "", "examples": digest.hexdigest(),
                "automask": repr(self.automask), "find": repr(self.find), "label": repr(self.label),
                "same_iou": self.same_iou}


def example_features(embedder, examples: list[tuple[np.ndarray, np.ndarray, str]],
                     grounding: GroundingSettings) -> tuple[Example, ...]:
    """One Example per category: the mean (re-normalised) CLIP feature of its example objects,
    each (image (H, W, 3) uint8, mask (H, W) bool, category)."""
    by_category: dict[str, list[np.ndarray]] = {}
    for image, mask, category in examples:
        if not np.asarray(mask, bool).any():
            continue
        by_category.setdefault(category, []).append(example_feature(embedder, image, mask, grounding))
    return tuple(Example(c, l2_normalise(np.mean(l2_normalise(np.stack(f)), axis=0)[None])[0].astype(np.float32))
                 for c, f in by_category.items())


def propose(engine, image: np.ndarray, job: LabelJob, sam: str | None = None) -> list[LabelledObject]:
    """The job's proposals on `image`: LabelledObjects with origin "proposal", reviewed False,
    score (class probability, or similarity for examples) and margin (top-1 minus top-2
    probability, vocabulary only). [] when SAM finds no usable candidate."""
    try:
        candidates = engine.grounding_candidates(image, job.grounding, sam)
    except NoCandidatesError:
        return []
    return propose_from_candidates(candidates, engine.embedder, job)


def propose_from_candidates(candidates: Candidates, embedder, job: LabelJob) -> list[LabelledObject]:
    """`propose` on an image's analysed candidates (no SAM or image CLIP pass here)."""
    found: list[LabelledObject] = []
    if (job.phrase or "").strip():
        inst = find_all(candidates, embedder, job.phrase, job.find)
        found += [_proposal(m, inst.label, s) for m, s in zip(inst.masks, inst.scores)]
    for example in job.examples:
        inst = find_like(candidates, example.feature, job.find)
        found += [_proposal(m, example.category, s) for m, s in zip(inst.masks, inst.scores)]
    vocab = job.vocab()
    if vocab:
        found += vocabulary_proposals(candidates, embedder, vocab, job.label, job.find.part_inside)
    return without_repeats(found, job.same_iou)


def vocabulary_proposals(candidates: Candidates, embedder, vocab: Vocabulary, settings: LabelSettings,
                         part_inside: float) -> list[LabelledObject]:
    """Label everything: each candidate's most probable category (with its margin over the
    second), best first, parts of better candidates dropped."""
    text = TEXT_FEATURES.features(embedder, tuple(prompt(c) for c in vocab))
    prob = label_probabilities(candidate_features(candidates, settings.global_weight), text, settings.temperature)
    top2 = -np.sort(-prob, axis=1)[:, :2] if prob.shape[1] > 1 else np.concatenate([prob, 0 * prob], axis=1)
    best = prob.argmax(axis=1)
    order = np.argsort(-top2[:, 0], kind="stable")
    order = order[top2[order, 0] >= settings.min_score]
    kept = drop_parts(candidates.masks, order, part_inside)
    return [_proposal(candidates.masks[i], vocab[int(best[i])].name, top2[i, 0], top2[i, 0] - top2[i, 1])
            for i in kept]


def _proposal(mask: np.ndarray, category: str, score, margin=None) -> LabelledObject:
    return LabelledObject(np.asarray(mask, bool), category, score=round(float(score), 6), origin="proposal",
                          reviewed=False, margin=None if margin is None else round(float(margin), 6))


def without_repeats(objects: list[LabelledObject], same_iou: float) -> list[LabelledObject]:
    """`objects` in order, each dropped when its mask repeats a kept one (IoU >= same_iou)."""
    kept: list[LabelledObject] = []
    for obj in objects:
        if not any(mask_iou(obj.mask, k.mask) >= same_iou for k in kept):
            kept.append(obj)
    return kept
