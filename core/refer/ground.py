"""Ground a referring expression in an image: candidates per image, then a choice per sentence.

Two stages, so that an image's candidates are computed once and shared by every sentence
(the app caches them per session; the evaluation per image):

1. :func:`image_candidates`: SAM's automatic masks (or masks you pass in), filtered, with
   their CLIP features: *local* (the object alone) and *global* (the whole image with the
   candidate emphasised). Independent of the sentence.
2. :func:`choose_for_expression`: score every candidate against the sentence, rank, and let
   the direction rule (:func:`core.refer.choose.choose`) pick among the top ``k``.

Two scorers (``GroundingSettings.method``):

- ``"global_local"`` (default): Global-Local CLIP (Yu, Seo, Son, CVPR 2023) as its authors'
  code does it. Local feature: the image with everything outside the mask set to the pixel
  mean, cut to the mask's box, squashed to CLIP's input size. Global feature: *token masking*
  (:meth:`core.embed.Embedder.token_masked_features`): the whole image squashed to CLIP's
  input, the patch tokens multiplied by the mask on the token grid before every block from
  ``masking_block`` on. Features are mixed, not scores: ``visual = v * global + (1 - v) *
  local`` and ``text = r * sentence + (1 - r) * noun_phrase``; the score is their cosine.
- ``"score_mix"`` (the earlier variant, an ablation): cosine *scores* are mixed,
  ``w * cos(global view, sentence) + (1 - w) * cos(local view, "a photo of a {noun}.")``,
  with an object view (crop, mask, ...) and a global view made by dimming or blurring the
  pixels around the candidate.

:func:`ground` runs both stages. Conventions: images (H, W, 3) uint8 RGB; masks (H, W) bool;
boxes XYXY (x0, y0, x1, y1) float pixels of the original image, x1/y1 exclusive; ``image_hw`` is (height, width).
No full-size padded or float copy of the image is made in the default path; very large
images keep fewer candidates (``max_candidate_pixels``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image

from core import views
from core.sam.automask import AutoMaskSettings
from core.embed import GRID_RESIZES, l2_normalise, mask_to_token_grid
from core.io.images import load_image
from core.refer.choose import check_positive_int, choose
from core.refer.parse import Expression, parse

METHODS = ("global_local", "score_mix")
SCORINGS = ("local", "global", "mixed")
GLOBAL_EMPHASES = ("dim", "blur")
LOCAL_FILLS = ("mean", "black", "none")

#: score_mix only: the global view is made on a copy whose longer side is at most this (CLIP
#: sees 224 px anyway), so a huge image is never copied (or padded) at full size per candidate.
SCORE_MIX_MAX_SIDE = 1024


class NoCandidatesError(ValueError):
    """No candidate mask survived (SAM found nothing, or everything was tiny)."""


def _unit_interval(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


@dataclass(frozen=True)
class GroundingSettings:
    """Algorithm settings of :func:`ground` (each field switches one ablation row).

    method: "global_local" (Global-Local CLIP as published; default) or "score_mix" (the
        earlier variant that mixes cosine scores); see the module docstring.
    scoring: which visual features score: "local", "global" or "mixed" (both, per the method's
        mixing rule). "local"/"global" are the ablations of either method.

    Global-Local ("global_local") settings, defaults as the authors ran RefCOCOg:
    visual_weight: v in ``visual = v * global + (1 - v) * local``; 0.85 on RefCOCOg, 0.95 on
        RefCOCO / RefCOCO+ (the authors' values).
    text_weight: r in ``text = r * sentence + (1 - r) * noun_phrase``; 0.5.
    masking_block: the first ViT block whose input patch tokens are masked (0-based): 9 of
        ViT-B/32's 12; a negative value counts from the end (-3 = the last three blocks of any
        depth). Checked against the model when features are computed.
    local_fill: what replaces the pixels outside the mask in the local view: "mean" (the CLIP
        preprocessing's mean colour, zero after normalisation; the authors fill with the pixel
        mean), "black", or "none" (the plain box crop).
    token_mask_resize: how a mask becomes a token-grid mask
        (:func:`core.embed.mask_to_token_grid`): "bilinear" (the authors' resize) or "area".
    normalise_features: L2-normalise the global and local features (and the sentence and noun
        phrase features) before mixing them; the authors mix CLIP's raw outputs (False).

    Score-mixing ("score_mix") settings:
    global_weight: ``score = global_weight * global + (1 - global_weight) * local`` in "mixed".
    local_view: the object view of the local score, a :data:`core.views.VIEW_NAMES` name.
    global_emphasis: how the whole image emphasises the candidate: "dim" (the rest darkened to
        core.views.DIM_FACTOR) or "blur"; padded to a square so CLIP's centre crop keeps it
        (on a copy at most SCORE_MIX_MAX_SIDE px long).

    Shared:
    orientation: apply the direction rule (:func:`choose`) when the sentence has a direction;
        False ranks by score only (the paper's baseline rows).
    top_k: how many best-scored candidates the direction chooses among (None = all); 3 as in
        the orientation-aware paper.
    min_area_fraction: drop candidate masks smaller than this fraction of the image.
    duplicate_iou: drop a candidate whose mask IoU with a better-SAM-scored one exceeds this.
    max_candidates: keep at most this many SAM candidates (best SAM score first; None = all).
    max_candidate_pixels: keep at most this many mask pixels of SAM candidates in all
        (N x H x W, bytes of the bool masks; None = no cap): 2**28 leaves the 64 candidates of
        any photo alone but keeps 8 of an 800 x 40000 image.
    automask: the :class:`core.sam.automask.AutoMaskSettings` of SAM's automatic masks.
    batch_size: CLIP image batch size.
    """

    method: str = "global_local"
    scoring: str = "mixed"
    visual_weight: float = 0.85
    text_weight: float = 0.5
    masking_block: int = 9
    local_fill: str = "mean"
    token_mask_resize: str = "bilinear"
    normalise_features: bool = False
    global_weight: float = 0.5
    local_view: str = "crop"
    global_emphasis: str = "dim"
    orientation: bool = True
    top_k: int | None = 3
    min_area_fraction: float = 0.0005
    duplicate_iou: float = 0.9
    max_candidates: int | None = 64
    max_candidate_pixels: int | None = 2 ** 28
    automask: AutoMaskSettings = field(default_factory=AutoMaskSettings)
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}, got {self.scoring!r}")
        _unit_interval(self.visual_weight, "visual_weight")
        _unit_interval(self.text_weight, "text_weight")
        _unit_interval(self.global_weight, "global_weight")
        if isinstance(self.masking_block, bool) or not isinstance(self.masking_block, (int, np.integer)):
            raise ValueError(f"masking_block must be an integer, got {self.masking_block!r}")
        if self.local_fill not in LOCAL_FILLS:
            raise ValueError(f"local_fill must be one of {LOCAL_FILLS}, got {self.local_fill!r}")
        if self.token_mask_resize not in GRID_RESIZES:
            raise ValueError(f"token_mask_resize must be one of {GRID_RESIZES}, got {self.token_mask_resize!r}")
        if not isinstance(self.normalise_features, bool):
            raise ValueError(f"normalise_features must be True or False, got {self.normalise_features!r}")
        if self.local_view not in views.VIEW_NAMES:
            raise ValueError(f"local_view must be one of {views.VIEW_NAMES}, got {self.local_view!r}")
        if self.global_emphasis not in GLOBAL_EMPHASES:
            raise ValueError(f"global_emphasis must be one of {GLOBAL_EMPHASES}, got {self.global_emphasis!r}")
        if self.top_k is not None:
            check_positive_int(self.top_k, "top_k")
        if self.max_candidates is not None:
            check_positive_int(self.max_candidates, "max_candidates")
        if self.max_candidate_pixels is not None:
            check_positive_int(self.max_candidate_pixels, "max_candidate_pixels")
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

    @property
    def need_local(self) -> bool:
        """Whether the scoring uses local features."""
        return self.scoring != "global"

    @property
    def need_global(self) -> bool:
        """Whether the scoring uses global features."""
        return self.scoring != "local"


@dataclass
class Candidates:
    """The candidate objects of one image, independent of any sentence (cache them per image).

    masks: (N, H, W) bool; boxes: (N, 4) float32 XYXY pixels; local: (N, D) float32 local
    features (object view) or (N, 0) when not computed; global_: (N, D) float32 global features
    or (N, 0); image_hw: (height, width) of the image; method: the :data:`METHODS` name the
    features were made for ("" when there are none). Features are as the method mixes them:
    CLIP's raw outputs for "global_local" (unless normalise_features), unit rows for "score_mix".
    """

    masks: np.ndarray
    boxes: np.ndarray
    local: np.ndarray
    global_: np.ndarray
    image_hw: tuple[int, int]
    method: str = ""

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def subset(self, index) -> "Candidates":
        """The candidates at ``index`` (an int array), in that order."""
        index = np.asarray(index, dtype=np.int64)
        return Candidates(self.masks[index], self.boxes[index], self.local[index], self.global_[index],
                          self.image_hw, self.method)


@dataclass(frozen=True)
class TextFeatures:
    """CLIP text features of one sentence, (D,) float32 each, unnormalised (as CLIP outputs them).

    sentence: the whole sentence; noun_phrase: :attr:`Expression.noun_phrase` (Global-Local's
    second text); noun_prompt: "a photo of a {noun}." (score_mix's local text).
    """

    sentence: np.ndarray
    noun_phrase: np.ndarray
    noun_prompt: np.ndarray


@dataclass
class Grounding:
    """The result of :func:`ground`: candidates ranked by score, and the one chosen.

    expression: the parsed sentence (noun, noun phrase, direction, ordinal).
    mask: (H, W) bool, the chosen candidate; box: (4,) float32 XYXY of it.
    chosen: index of the chosen candidate in the ranked arrays below (0 when the direction
        rule did not move away from the best score).
    masks: (N, H, W) bool candidates, best score first; boxes: (N, 4) float32 XYXY.
    scores: (N,) float32, the score they are ranked by (global_local: cosine of the mixed visual
        and text features; score_mix: the mixed cosine scores).
    local_scores / global_scores: (N,) float32 cosine similarities of the local / global
        feature alone with the text the method scores it against (global_local: the mixed
        text; score_mix: the noun prompt / the sentence); 0 when that feature was not
        computed, NaN when given scores replaced CLIP.
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
            "method": self.settings.method,
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
    ``max_candidates``. Compares one pair at a time inside their boxes (no (M, H, W) temporaries).
    """
    m = np.asarray(masks)
    if m.ndim != 3 or m.dtype != bool:
        raise ValueError(f"masks must be (N, H, W) bool, got {m.shape} {m.dtype}")
    n, h, w = m.shape
    q = np.zeros(n) if quality is None else np.asarray(quality, dtype=np.float64)
    if q.shape != (n,):
        raise ValueError(f"quality must be (N,) = ({n},), got {q.shape}")
    areas = np.array([np.count_nonzero(mask) for mask in m], dtype=np.int64)
    big = np.flatnonzero((areas > 0) & (areas >= min_area_fraction * h * w))
    order = big[np.lexsort((big, -q[big]))]
    boxes = {int(i): views.mask_to_box(m[i]).astype(np.int64) for i in order}
    kept: list[int] = []
    for i in order:
        i = int(i)
        duplicate = False
        for k in kept:
            a, b = boxes[i], boxes[k]
            x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
            if x2 <= x1 or y2 <= y1:
                continue
            inter = np.count_nonzero(m[i, y1:y2, x1:x2] & m[k, y1:y2, x1:x2])
            if inter / max(areas[i] + areas[k] - inter, 1) > duplicate_iou:
                duplicate = True
                break
        if duplicate:
            continue
        kept.append(i)
        if max_candidates is not None and len(kept) >= max_candidates:
            break
    return np.asarray(kept, dtype=np.int64)


def candidate_limit(settings: GroundingSettings, image_hw) -> int | None:
    """How many SAM candidates an image of ``image_hw`` (height, width) keeps: max_candidates,
    lowered so that N x H x W stays within max_candidate_pixels (at least 1; None = no limit)."""
    limits = [settings.max_candidates]
    if settings.max_candidate_pixels is not None:
        limits.append(max(1, settings.max_candidate_pixels // max(1, int(image_hw[0]) * int(image_hw[1]))))
    limits = [v for v in limits if v is not None]
    return min(limits) if limits else None


def sam_candidates(segmenter, image: np.ndarray, settings: GroundingSettings) -> tuple[np.ndarray, np.ndarray]:
    """SAM automatic masks of ``image`` after :func:`filter_candidates`.

    Returns (masks (M, H, W) bool, sam_scores (M,) float32), best SAM score first, at most
    :func:`candidate_limit`. Raises :class:`NoCandidatesError` when none survive.
    """
    return kept_candidates(segmenter.everything(segmenter.set_image(image), settings.automask), settings)


def kept_candidates(auto, settings: GroundingSettings) -> tuple[np.ndarray, np.ndarray]:
    """The automatic masks (core.sam.automask.AutoMasks) grounding keeps after
    :func:`filter_candidates`: (masks (M, H, W) bool, scores (M,) float32), best first.
    Raises :class:`NoCandidatesError` when none are left."""
    if len(auto) == 0:
        raise NoCandidatesError(
            "SAM found no object masks in this image; lower automask pred_iou_thresh / "
            "stability_score_thresh (untrained SAM needs 0) or pass candidate masks")
    keep = filter_candidates(auto.masks, auto.scores, min_area_fraction=settings.min_area_fraction,
                             duplicate_iou=settings.duplicate_iou,
                             max_candidates=candidate_limit(settings, auto.masks.shape[1:]))
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
    empty = [i for i in range(len(m)) if not m[i].any()]
    if empty:
        raise ValueError(f"candidate masks {empty} are empty (no object pixels)")
    return m


def local_view(image: np.ndarray, mask: np.ndarray, fill=(123, 117, 104)) -> np.ndarray:
    """Global-Local's local view before resizing: ``image`` cut to the mask's box, with the pixels
    outside the mask set to ``fill``.

    image: (H, W, 3) uint8; mask: (H, W) bool, not empty; fill: an RGB triple (0..255) or None
    to keep the pixels (a plain box crop). Returns (y2 - y1, x2 - x1, 3) uint8 for the mask's
    box XYXY (x0, y0, x1, y1) = :func:`core.views.mask_to_box`, x1/y1 exclusive; only the box is
    copied. :meth:`core.embed.Embedder.resize_to_input` then squashes it to CLIP's input.
    """
    x1, y1, x2, y2 = (int(v) for v in views.mask_to_box(mask))
    out = np.array(image[y1:y2, x1:x2], dtype=np.uint8, copy=True)
    if fill is not None:
        out[~np.asarray(mask[y1:y2, x1:x2], dtype=bool)] = np.asarray(fill, dtype=np.uint8)
    return out


def fill_colour(how: str, embedder=None) -> tuple[int, int, int] | None:
    """The RGB fill of :func:`local_view` for a ``local_fill`` setting: "mean" is the embedder's
    normalisation mean (CLIP's (123, 117, 104) without one), "black" (0, 0, 0), "none" None."""
    if how == "none":
        return None
    if how == "black":
        return (0, 0, 0)
    if how == "mean":
        mean = embedder.pixel_mean if embedder is not None else (0.48145466, 0.4578275, 0.40821073)
        return tuple(int(round(255 * v)) for v in mean)
    raise ValueError(f"local_fill must be one of {LOCAL_FILLS}, got {how!r}")


def pad_to_square(image: np.ndarray) -> np.ndarray:
    """(S, S, 3) uint8: ``image`` centred on black, S = max(H, W) (so a centre crop loses nothing).
    score_mix only, on images at most SCORE_MIX_MAX_SIDE long (see :func:`score_mix_global_view`)."""
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


def _shrink(image: np.ndarray, max_side: int) -> tuple[np.ndarray, tuple[int, int] | None]:
    """``image`` downscaled so its longer side is at most ``max_side`` (and the new (w, h), or None)."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image, None
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR)), size


def score_mix_global_view(image: np.ndarray, mask: np.ndarray, how: str = "dim", *, small=None) -> np.ndarray:
    """score_mix's global view: the whole image, candidate emphasised, padded to a square.

    Made on a copy at most SCORE_MIX_MAX_SIDE long (``small``: that copy and its (w, h), from
    the caller so it is made once per image), so huge images are never padded at full size.
    """
    small_image, size = small if small is not None else _shrink(image, SCORE_MIX_MAX_SIDE)
    if size is not None:
        mask = np.asarray(Image.fromarray(np.asarray(mask, np.uint8) * 255).resize(size, Image.NEAREST)) > 0
    return pad_to_square(emphasise(small_image, mask, how))


def global_local_features(embedder, image: np.ndarray, masks: np.ndarray, settings: GroundingSettings, *,
                          need_local: bool = True, need_global: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Global-Local CLIP's (local (N, D), global (N, D)) float32 features of N candidate masks.

    Local: :func:`local_view` with ``settings.local_fill``, squashed to CLIP's input. Global:
    token masking from ``settings.masking_block`` with the masks on the token grid
    (``settings.token_mask_resize``). Raw CLIP outputs unless ``settings.normalise_features``;
    a feature not needed is (N, 0).
    """
    n = len(masks)
    local = global_ = np.zeros((n, 0), dtype=np.float32)
    unit = settings.normalise_features
    if need_local:
        fill = fill_colour(settings.local_fill, embedder)
        views_ = [embedder.resize_to_input(local_view(image, m, fill)) for m in masks]
        local = embedder.embed_squashed(views_, batch_size=settings.batch_size, normalize=unit)
    if need_global:
        grid = embedder.token_grid
        token_masks = np.stack([mask_to_token_grid(m, grid, settings.token_mask_resize) for m in masks])
        global_ = embedder.token_masked_features(image, token_masks, settings.masking_block,
                                                 batch_size=settings.batch_size, normalize=unit)
    return local, global_


def score_mix_features(embedder, image: np.ndarray, masks: np.ndarray, settings: GroundingSettings, *,
                       need_local: bool = True, need_global: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The score_mix variant's (local (N, D), global (N, D)) unit features ((N, 0) when not needed)."""
    n = len(masks)
    local = global_ = np.zeros((n, 0), dtype=np.float32)
    if need_local:
        local = embedder.embed_images([views.render_view(settings.local_view, image, m) for m in masks],
                                      batch_size=settings.batch_size)
    if need_global:
        small = _shrink(image, SCORE_MIX_MAX_SIDE)
        global_ = embedder.embed_images([score_mix_global_view(image, m, settings.global_emphasis, small=small)
                                         for m in masks], batch_size=settings.batch_size)
    return local, global_


def image_candidates(segmenter, embedder, image: np.ndarray, settings: GroundingSettings, *,
                     masks=None, need_local: bool | None = None, need_global: bool | None = None) -> Candidates:
    """Stage 1: the candidates of ``image`` with their CLIP features (no sentence involved).

    segmenter: core.sam.segmenter.Segmenter (unused when ``masks`` is given); embedder:
    core.embed.Embedder, or None for no features (then scores must be given in stage 2);
    image: (H, W, 3) uint8; masks: (N, H, W) bool to use instead of SAM's automatic masks
    (e.g. ground truth); need_local / need_global: which features to compute (default: what
    ``settings.scoring`` uses; the others are (N, 0)). Features per ``settings.method``.
    Raises :class:`NoCandidatesError` when there is nothing to choose from.
    """
    if masks is not None:
        masks = candidates_from_masks(masks, image.shape)
    elif segmenter is None:
        raise ValueError("image_candidates() needs a segmenter, or candidate masks")
    else:
        masks, _ = sam_candidates(segmenter, image, settings)
    need_local = settings.need_local if need_local is None else need_local
    need_global = settings.need_global if need_global is None else need_global
    n = len(masks)
    local = global_ = np.zeros((n, 0), dtype=np.float32)
    method = ""
    if embedder is not None and (need_local or need_global):
        make = global_local_features if settings.method == "global_local" else score_mix_features
        local, global_ = make(embedder, image, masks, settings, need_local=need_local, need_global=need_global)
        method = settings.method
    return Candidates(masks=masks, boxes=views.masks_to_boxes(masks), local=local, global_=global_,
                      image_hw=(int(image.shape[0]), int(image.shape[1])), method=method)


# ----------------------------------------------------------------------------- stage 2: choice


def text_features(embedder, expressions: list[Expression]) -> list[TextFeatures]:
    """One :class:`TextFeatures` per expression (sentence, noun phrase, noun prompt), one CLIP batch.

    The noun phrase is :attr:`Expression.noun_phrase` (the sentence when it is empty).
    """
    sentences = [e.text.strip() for e in expressions]
    phrases = [e.noun_phrase.strip() or e.text.strip() for e in expressions]
    prompts = [e.noun_prompt for e in expressions]
    feats = embedder.embed_texts(sentences + phrases + prompts, normalize=False)
    n = len(expressions)
    return [TextFeatures(sentence=feats[i], noun_phrase=feats[n + i], noun_prompt=feats[2 * n + i])
            for i in range(n)]


def mix_features(first: np.ndarray, second: np.ndarray, weight: float) -> np.ndarray:
    """``weight * first + (1 - weight) * second`` in float32 (rows or vectors of equal shape).

    Global-Local's visual feature is ``mix_features(global, local, v)`` and its text feature
    ``mix_features(sentence, noun_phrase, r)``.
    """
    a, b = np.asarray(first, dtype=np.float32), np.asarray(second, dtype=np.float32)
    if a.shape != b.shape:
        raise ValueError(f"features to mix must have the same shape, got {a.shape} and {b.shape}")
    return (np.float32(weight) * a + np.float32(1.0 - weight) * b).astype(np.float32)


def cosine(features: np.ndarray, text: np.ndarray) -> np.ndarray:
    """(N,) float32 cosines of (N, D) rows with a (D,) vector (neither needs unit length);
    zeros when the features are (N, 0)."""
    f = np.asarray(features, dtype=np.float32)
    if f.ndim != 2:
        raise ValueError(f"features must be (N, D), got {f.shape}")
    if f.shape[1] == 0:
        return np.zeros(len(f), dtype=np.float32)
    t = l2_normalise(np.asarray(text, dtype=np.float32)[None])[0]
    return (l2_normalise(f) @ t).astype(np.float32)


def global_local_scores(local: np.ndarray, global_: np.ndarray, text: TextFeatures,
                        settings: GroundingSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global-Local CLIP's (scores, local_scores, global_scores), each (N,) float32.

    text = r * sentence + (1 - r) * noun_phrase; visual = v * global + (1 - v) * local
    ("mixed"), or the local / global feature alone; score = cos(visual, text). With
    ``normalise_features`` the four features are made unit length before mixing.
    """
    sentence, phrase = text.sentence, text.noun_phrase
    if settings.normalise_features:
        sentence, phrase = l2_normalise(sentence[None])[0], l2_normalise(phrase[None])[0]
        local = l2_normalise(local) if local.shape[1] else local
        global_ = l2_normalise(global_) if global_.shape[1] else global_
    t = mix_features(sentence, phrase, settings.text_weight)
    local_scores, global_scores = cosine(local, t), cosine(global_, t)
    if settings.scoring == "local":
        return local_scores, local_scores, global_scores
    if settings.scoring == "global":
        return global_scores, local_scores, global_scores
    visual = mix_features(global_, local, settings.visual_weight)
    return cosine(visual, t), local_scores, global_scores


def mix_scores(local: np.ndarray, global_: np.ndarray, scoring: str, global_weight: float) -> np.ndarray:
    """score_mix's ranking score: local, global or ``global_weight * global + (1 - global_weight) * local``."""
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


def choose_for_expression(expression: Expression, candidates: Candidates, settings: GroundingSettings, *,
                          text: TextFeatures | None = None, scores=None, source_index=None) -> Grounding:
    """Stage 2: score ``candidates`` against one sentence, rank them and apply the direction rule.

    text: the sentence's :class:`TextFeatures` from :func:`text_features`; scores: (N,) scores
    that replace CLIP (e.g. an oracle; local/global scores are then NaN); exactly one is needed.
    The candidates' features must come from ``settings.method`` (ValueError otherwise).
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
        if not isinstance(text, TextFeatures):
            raise ValueError(f"text must be a TextFeatures record (from text_features()), got {type(text).__name__}")
        if candidates.method != settings.method:
            raise ValueError(f"the candidates' features were made for method {candidates.method or 'none'!r}, "
                             f"the settings ask for {settings.method!r}: compute them with these settings")
        if settings.method == "global_local":
            scores, local, global_ = global_local_scores(candidates.local, candidates.global_, text, settings)
        else:
            local = cosine(candidates.local, text.noun_prompt)
            global_ = cosine(candidates.global_, text.sentence)
            scores = mix_scores(local, global_, settings.scoring, settings.global_weight)
    return rank_and_choose(expression, candidates.masks, candidates.boxes, scores, local, global_, settings,
                           candidates.image_hw, source_index=source_index)


def ground(segmenter, embedder, image, text, *, settings: GroundingSettings | None = None,
           candidate_masks=None, candidate_scores=None) -> Grounding:
    """Segment the object a referring expression names (stage 1, then stage 2).

    segmenter: core.sam.segmenter.Segmenter (unused when ``candidate_masks`` is given);
    embedder: core.embed.Embedder (unused when ``candidate_scores`` is given);
    image: (H, W, 3) uint8 RGB (anything core.io.images.load_image accepts is converted);
    text: the sentence, or an already parsed :class:`Expression`;
    settings: :class:`GroundingSettings` (defaults: Global-Local CLIP, v 0.85, r 0.5, masking
        from block 9, top-3 direction rule);
    candidate_masks: (N, H, W) bool to use instead of SAM's automatic masks (e.g. ground truth);
    candidate_scores: (N,) scores to rank the candidates by instead of CLIP (e.g. an oracle);
        needs ``candidate_masks``.

    Returns a :class:`Grounding`. Raises ValueError on bad input (also a sentence longer than
    core.refer.parse.MAX_EXPRESSION_CHARS) and :class:`NoCandidatesError` (a ValueError) when
    there is nothing to choose from.
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
    candidates = image_candidates(segmenter, clip, image, settings, masks=candidate_masks)
    text_feats = None if clip is None else text_features(clip, [expression])[0]
    return choose_for_expression(expression, candidates, settings, text=text_feats, scores=candidate_scores)
