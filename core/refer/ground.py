"""Ground a referring expression in an image: candidates per image, then a choice per sentence.

Two stages, so that an image's candidates are computed once and shared by every sentence
(the app caches them per session; the evaluation per image):

1. :func:`image_candidates`: SAM's automatic masks (or masks you pass in), filtered, with
   their CLIP features: *local* (the object view) and *global* (the whole image with the
   candidate emphasised). Independent of the sentence.
2. :func:`choose_for_expression`: score every candidate against the sentence (local view vs
   "a photo of a {noun}.", global view vs the sentence, mixed per settings), rank, and let the
   direction rule (:func:`core.refer.choose.choose`) pick among the top ``k``.

:func:`ground` runs both. Conventions: images (H, W, 3) uint8 RGB; masks (H, W) bool; boxes
XYXY float pixels of the original image (x2/y2 exclusive); ``image_hw`` is (height, width).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from core import views
from core.automask import AutoMaskSettings
from core.images import load_image
from core.refer.choose import check_positive_int, choose
from core.refer.parse import Expression, parse

SCORINGS = ("local", "global", "mixed")
GLOBAL_EMPHASES = ("dim", "blur")


class NoCandidatesError(ValueError):
    """No candidate mask survived (SAM found nothing, or everything was tiny)."""


@dataclass(frozen=True)
class GroundingSettings:
    """Algorithm settings of :func:`ground` (each field switches one ablation row).

    scoring: "local" (object view vs. the noun prompt), "global" (whole image with the
        candidate emphasised vs. the whole sentence) or "mixed":
        ``score = global_weight * global + (1 - global_weight) * local``.
    global_weight: the mixing weight of the global score in "mixed" (0..1). Global-Local CLIP
        mixes *features* with 0.85 on the global side; we mix cosine *scores*, where both terms
        have the same scale, and default to an even 0.5.
    local_view: the object view for the local score, a :data:`core.views.VIEW_NAMES` name
        ("crop" or "mask" as in the paper; "mask_crop", "dim", "blur", "context" also work).
    global_emphasis: how the whole image emphasises the candidate: "dim" (the rest darkened
        to core.views.DIM_FACTOR) or "blur" (the rest Gaussian-blurred). The whole image is
        padded to a square first so CLIP's centre crop never cuts a candidate off.
    orientation: apply the direction rule (:func:`choose`) when the sentence has a direction;
        False ranks by score only (the paper's baseline row).
    top_k: how many best-scored candidates the direction chooses among (None = all).
    min_area_fraction: drop candidate masks smaller than this fraction of the image.
    duplicate_iou: drop a candidate whose mask IoU with a better-SAM-scored one exceeds this.
    max_candidates: keep at most this many candidates (best SAM score first; None = all).
    automask: the :class:`core.automask.AutoMaskSettings` of SAM's automatic masks.
    batch_size: CLIP image batch size.
    """

    scoring: str = "mixed"
    global_weight: float = 0.5
    local_view: str = "crop"
    global_emphasis: str = "dim"
    orientation: bool = True
    top_k: int | None = 3
    min_area_fraction: float = 0.0005
    duplicate_iou: float = 0.9
    max_candidates: int | None = 64
    automask: AutoMaskSettings = field(default_factory=AutoMaskSettings)
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}, got {self.scoring!r}")
        if not (isinstance(self.global_weight, (int, float)) and 0.0 <= self.global_weight <= 1.0):
            raise ValueError(f"global_weight must be a number in [0, 1], got {self.global_weight!r}")
        if self.local_view not in views.VIEW_NAMES:
            raise ValueError(f"local_view must be one of {views.VIEW_NAMES}, got {self.local_view!r}")
        if self.global_emphasis not in GLOBAL_EMPHASES:
            raise ValueError(f"global_emphasis must be one of {GLOBAL_EMPHASES}, got {self.global_emphasis!r}")
        if self.top_k is not None:
            check_positive_int(self.top_k, "top_k")
        if self.max_candidates is not None:
            check_positive_int(self.max_candidates, "max_candidates")
        if not 0.0 <= self.min_area_fraction < 1.0:
            raise ValueError(f"min_area_fraction must be in [0, 1), got {self.min_area_fraction!r}")
        if not 0.0 < self.duplicate_iou <= 1.0:
            raise ValueError(f"duplicate_iou must be in (0, 1], got {self.duplicate_iou!r}")
        if not isinstance(self.automask, AutoMaskSettings):
            raise ValueError(f"automask must be an AutoMaskSettings, got {type(self.automask).__name__}")
        check_positive_int(self.batch_size, "batch_size")

    def with_(self, **changes) -> "GroundingSettings":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


@dataclass
class Candidates:
    """The candidate objects of one image, independent of any sentence (cache them per image).

    masks: (N, H, W) bool; boxes: (N, 4) float32 XYXY pixels; local: (N, D) float32 unit rows
    (object view) or (N, 0) when not computed; global_: (N, D) float32 unit rows (whole image,
    candidate emphasised) or (N, 0); image_hw: (height, width) of the image.
    """

    masks: np.ndarray
    boxes: np.ndarray
    local: np.ndarray
    global_: np.ndarray
    image_hw: tuple[int, int]

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def subset(self, index) -> "Candidates":
        """The candidates at ``index`` (an int array), in that order."""
        index = np.asarray(index, dtype=np.int64)
        return Candidates(self.masks[index], self.boxes[index], self.local[index], self.global_[index],
                          self.image_hw)


@dataclass
class Grounding:
    """The result of :func:`ground`: candidates ranked by score, and the one chosen.

    expression: the parsed sentence (noun, direction, ordinal).
    mask: (H, W) bool, the chosen candidate; box: (4,) float32 XYXY of it.
    chosen: index of the chosen candidate in the ranked arrays below (0 when the direction
        rule did not move away from the best score).
    masks: (N, H, W) bool candidates, best score first; boxes: (N, 4) float32 XYXY.
    scores: (N,) float32, the score they are ranked by (local, global or mixed per settings).
    local_scores / global_scores: (N,) float32 CLIP cosine similarities (NaN when given
        scores replaced CLIP).
    source_index: (N,) int64 index of each ranked candidate in the input / SAM candidate list.
    direction_applied: whether the direction rule chose (orientation on and a direction found).
    settings: the :class:`GroundingSettings` used.
    """

    expression: Expression
    mask: np.ndarray
    box: np.ndarray
    chosen: int
    masks: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    local_scores: np.ndarray
    global_scores: np.ndarray
    source_index: np.ndarray
    direction_applied: bool
    settings: GroundingSettings

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def summary(self, top: int = 5) -> dict:
        """JSON-friendly explanation: the parse, the chosen candidate and the ``top`` best ones."""
        rows = []
        for i in range(min(top, len(self))):
            rows.append({
                "rank": i, "box": [round(float(v), 1) for v in self.boxes[i]],
                "score": float(self.scores[i]), "local": float(self.local_scores[i]),
                "global": float(self.global_scores[i]), "area": int(self.masks[i].sum()),
                "chosen": i == self.chosen,
            })
        return {
            "expression": self.expression.to_dict(),
            "chosen": self.chosen,
            "chosen_box": [round(float(v), 1) for v in self.box],
            "direction_applied": self.direction_applied,
            "n_candidates": len(self),
            "scoring": self.settings.scoring,
            "candidates": rows,
        }


# ----------------------------------------------------------------------------- stage 1: candidates


def filter_candidates(masks, quality=None, *, min_area_fraction: float = 0.0005,
                      duplicate_iou: float = 0.9, max_candidates: int | None = None) -> np.ndarray:
    """Indices of the candidate masks to keep: not tiny, not a duplicate of a better one.

    masks: (N, H, W) bool; quality: (N,) higher is better (e.g. SAM's predicted IoU; None keeps
    the given order). Masks smaller than ``min_area_fraction`` of the image (or empty) go;
    then greedily, best quality first, a mask whose IoU with a kept mask exceeds
    ``duplicate_iou`` goes. Returns (M,) int64 indices, best quality first, at most
    ``max_candidates``.
    """
    m = np.asarray(masks)
    if m.ndim != 3 or m.dtype != bool:
        raise ValueError(f"masks must be (N, H, W) bool, got {m.shape} {m.dtype}")
    n, h, w = m.shape
    q = np.zeros(n) if quality is None else np.asarray(quality, dtype=np.float64)
    if q.shape != (n,):
        raise ValueError(f"quality must be (N,) = ({n},), got {q.shape}")
    flat = m.reshape(n, -1)
    areas = flat.sum(axis=1)
    big = np.flatnonzero((areas > 0) & (areas >= min_area_fraction * h * w))
    order = big[np.lexsort((big, -q[big]))]
    kept: list[int] = []
    for i in order:
        if kept:
            inter = (flat[kept] & flat[i]).sum(axis=1)
            union = areas[kept] + areas[i] - inter
            if np.any(inter / np.maximum(union, 1) > duplicate_iou):
                continue
        kept.append(int(i))
        if max_candidates is not None and len(kept) >= max_candidates:
            break
    return np.asarray(kept, dtype=np.int64)


def sam_candidates(segmenter, image: np.ndarray, settings: GroundingSettings) -> tuple[np.ndarray, np.ndarray]:
    """SAM automatic masks of ``image`` after :func:`filter_candidates`.

    Returns (masks (M, H, W) bool, sam_scores (M,) float32), best SAM score first.
    Raises :class:`NoCandidatesError` when none survive.
    """
    auto = segmenter.everything(segmenter.set_image(image), settings.automask)
    if len(auto) == 0:
        raise NoCandidatesError(
            "SAM found no object masks in this image; lower automask pred_iou_thresh / "
            "stability_score_thresh (untrained SAM needs 0) or pass candidate masks")
    keep = filter_candidates(auto.masks, auto.scores, min_area_fraction=settings.min_area_fraction,
                             duplicate_iou=settings.duplicate_iou, max_candidates=settings.max_candidates)
    if len(keep) == 0:
        raise NoCandidatesError(
            f"all {len(auto)} SAM masks were smaller than min_area_fraction={settings.min_area_fraction}")
    return auto.masks[keep], auto.scores[keep].astype(np.float32)


def candidates_from_masks(masks, image_shape) -> np.ndarray:
    """Validate candidate masks given by the caller: (N, H, W) bool matching ``image_shape[:2]``."""
    m = np.asarray(masks)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.dtype != bool:
        raise ValueError(f"candidate masks must be (N, H, W) bool, got {m.shape} {m.dtype}")
    if m.shape[1:] != tuple(image_shape[:2]):
        raise ValueError(f"candidate masks are {m.shape[1:]} but the image is {tuple(image_shape[:2])}")
    if len(m) == 0:
        raise NoCandidatesError("no candidate masks were given")
    empty = np.flatnonzero(~m.reshape(len(m), -1).any(axis=1))
    if len(empty):
        raise ValueError(f"candidate masks {empty.tolist()} are empty (no object pixels)")
    return m


def pad_to_square(image: np.ndarray) -> np.ndarray:
    """(S, S, 3) uint8: ``image`` centred on black, S = max(H, W) (so a centre crop loses nothing)."""
    h, w = image.shape[:2]
    side = max(h, w)
    out = np.zeros((side, side, 3), dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    out[top:top + h, left:left + w] = image
    return out


def emphasise(image: np.ndarray, mask: np.ndarray, how: str = "dim") -> np.ndarray:
    """The whole ``image`` (H, W, 3) uint8 with ``mask`` (H, W) bool emphasised: the rest dimmed
    (core.views.DIM_FACTOR) or blurred (radius core.views.BLUR_FRACTION of the longer side)."""
    if how == "dim":
        return views.dim_background(image, mask)
    if how == "blur":
        return views.blur_background(image, mask, max(2.0, views.BLUR_FRACTION * max(image.shape[:2])))
    raise ValueError(f"unknown emphasis {how!r}; choose one of {GLOBAL_EMPHASES}")


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """(N, 4) float32 XYXY boxes of (N, H, W) bool masks ((0, 4) for none)."""
    if len(masks) == 0:
        return np.zeros((0, 4), dtype=np.float32)
    return np.stack([views.mask_to_box(m) for m in masks]).astype(np.float32)


def image_candidates(segmenter, embedder, image: np.ndarray, settings: GroundingSettings, *,
                     masks=None, need_local: bool = True, need_global: bool = True) -> Candidates:
    """Stage 1: the candidates of ``image`` with their CLIP features (no sentence involved).

    segmenter: core.segment.Segmenter (unused when ``masks`` is given); embedder:
    core.embed.Embedder, or None for no features (then scores must be given in stage 2);
    image: (H, W, 3) uint8; masks: (N, H, W) bool to use instead of SAM's automatic masks
    (e.g. ground truth); need_local / need_global: which features to compute (the others are
    (N, 0)). Raises :class:`NoCandidatesError` when there is nothing to choose from.
    """
    if masks is not None:
        masks = candidates_from_masks(masks, image.shape)
    elif segmenter is None:
        raise ValueError("image_candidates() needs a segmenter, or candidate masks")
    else:
        masks, _ = sam_candidates(segmenter, image, settings)
    n = len(masks)
    empty = np.zeros((n, 0), dtype=np.float32)
    local = global_ = empty
    if embedder is not None and need_local:
        local = embedder.embed_images([views.render_view(settings.local_view, image, m) for m in masks],
                                      batch_size=settings.batch_size)
    if embedder is not None and need_global:
        global_ = embedder.embed_images([pad_to_square(emphasise(image, m, settings.global_emphasis))
                                         for m in masks], batch_size=settings.batch_size)
    return Candidates(masks=masks, boxes=masks_to_boxes(masks), local=local, global_=global_,
                      image_hw=(int(image.shape[0]), int(image.shape[1])))


# ----------------------------------------------------------------------------- stage 2: choice


def text_features(embedder, expressions: list[Expression]) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(noun prompt (D,), whole sentence (D,)), ...] float32 unit vectors, one CLIP batch."""
    texts = [e.noun_prompt for e in expressions] + [e.text.strip() for e in expressions]
    feats = embedder.embed_texts(texts)
    n = len(expressions)
    return [(feats[i], feats[n + i]) for i in range(n)]


def mix_scores(local: np.ndarray, global_: np.ndarray, scoring: str, global_weight: float) -> np.ndarray:
    """The ranking score: local, global or ``global_weight * global + (1 - global_weight) * local``."""
    if scoring == "local":
        return np.asarray(local, dtype=np.float32)
    if scoring == "global":
        return np.asarray(global_, dtype=np.float32)
    if scoring == "mixed":
        return (global_weight * np.asarray(global_) + (1.0 - global_weight) * np.asarray(local)).astype(np.float32)
    raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")


def rank_and_choose(expression: Expression, masks, boxes, scores, local_scores, global_scores,
                    settings: GroundingSettings, image_hw, source_index=None) -> Grounding:
    """Sort candidates by score (best first, stable) and apply :func:`choose`; a :class:`Grounding`.

    image_hw: (height, width) of the image the boxes are in.
    """
    scores = np.asarray(scores, dtype=np.float32)
    n = len(scores)
    src = np.arange(n, dtype=np.int64) if source_index is None else np.asarray(source_index, dtype=np.int64)
    order = np.lexsort((np.arange(n), -scores))
    masks, boxes = np.asarray(masks)[order], np.asarray(boxes, dtype=np.float32)[order]
    scores, src = scores[order], src[order]
    local_scores = np.asarray(local_scores, dtype=np.float32)[order]
    global_scores = np.asarray(global_scores, dtype=np.float32)[order]
    applied = bool(settings.orientation and expression.direction is not None)
    chosen = (choose(expression.direction, boxes, scores, top_k=settings.top_k, image_hw=image_hw,
                     ordinal=expression.ordinal) if applied else 0)
    return Grounding(expression=expression, mask=masks[chosen], box=boxes[chosen], chosen=int(chosen),
                     masks=masks, boxes=boxes, scores=scores, local_scores=local_scores,
                     global_scores=global_scores, source_index=src, direction_applied=applied,
                     settings=settings)


def _similarities(features: np.ndarray, text: np.ndarray) -> np.ndarray:
    """(N,) cosines of (N, D) unit rows with a (D,) unit vector; zeros when features are (N, 0)."""
    if features.shape[1] == 0:
        return np.zeros(len(features), dtype=np.float32)
    return (features @ text).astype(np.float32)


def choose_for_expression(expression: Expression, candidates: Candidates, settings: GroundingSettings, *,
                          text=None, scores=None, source_index=None) -> Grounding:
    """Stage 2: score ``candidates`` against one sentence, rank them and apply the direction rule.

    text: (noun prompt (D,), sentence (D,)) from :func:`text_features`; scores: (N,) scores that
    replace CLIP (e.g. an oracle; local/global scores are then NaN); exactly one is needed.
    source_index: (N,) ids reported in ``Grounding.source_index`` (default 0..N-1).
    """
    if len(candidates) == 0:
        raise NoCandidatesError("no candidates to choose from")
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float32)
        if scores.shape != (len(candidates),):
            raise ValueError(f"candidate_scores must be ({len(candidates)},), got {scores.shape}")
        local = global_ = np.full(len(candidates), np.nan, dtype=np.float32)
    elif text is None:
        raise ValueError("choose_for_expression() needs the sentence's text features, or scores")
    else:
        local = _similarities(candidates.local, text[0])
        global_ = _similarities(candidates.global_, text[1])
        scores = mix_scores(local, global_, settings.scoring, settings.global_weight)
    return rank_and_choose(expression, candidates.masks, candidates.boxes, scores, local, global_, settings,
                           candidates.image_hw, source_index=source_index)


def ground(segmenter, embedder, image, text, *, settings: GroundingSettings | None = None,
           candidate_masks=None, candidate_scores=None) -> Grounding:
    """Segment the object a referring expression names (stage 1, then stage 2).

    segmenter: core.segment.Segmenter (unused when ``candidate_masks`` is given);
    embedder: core.embed.Embedder (unused when ``candidate_scores`` is given);
    image: (H, W, 3) uint8 RGB (anything core.images.load_image accepts is converted);
    text: the sentence, or an already parsed :class:`Expression`;
    settings: :class:`GroundingSettings` (defaults: mixed scoring, crop view, dim, top-3);
    candidate_masks: (N, H, W) bool to use instead of SAM's automatic masks (e.g. ground truth);
    candidate_scores: (N,) scores to rank the candidates by instead of CLIP (e.g. an oracle);
        needs ``candidate_masks``.

    Returns a :class:`Grounding`. Raises ValueError on bad input and
    :class:`NoCandidatesError` (a ValueError) when there is nothing to choose from.
    """
    settings = settings or GroundingSettings()
    expression = text if isinstance(text, Expression) else parse(text)
    image = load_image(image)
    if candidate_scores is not None and candidate_masks is None:
        raise ValueError("candidate_scores needs candidate_masks (scores of which masks?)")
    if candidate_masks is not None:
        candidate_masks = candidates_from_masks(candidate_masks, image.shape)
    if candidate_scores is None and embedder is None:
        raise ValueError("ground() needs an embedder, or candidate_scores")
    clip = embedder if candidate_scores is None else None
    candidates = image_candidates(segmenter, clip, image, settings, masks=candidate_masks,
                                  need_local=settings.scoring != "global",
                                  need_global=settings.scoring != "local")
    text_feats = None if clip is None else text_features(clip, [expression])[0]
    return choose_for_expression(expression, candidates, settings, text=text_feats, scores=candidate_scores)
