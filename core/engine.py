"""The engine facade the app and the CLI share: settings in, shared models out.

Models load lazily, once, through `core.models`; everything here is read-only after
loading and safe to share between sessions (the segmenter and embedder lock their
model calls). Per-user state (image, clicks, masks, gallery additions) lives with the
caller.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace

import numpy as np

from core import analysis, config
from core.analysis import AnalysisCache
from core.embed import Embedder
from core.models import default_sam_model, load_clip, load_sam
from core.refer.ground import Candidates, Grounding, GroundingSettings, choose_for_expression, text_features
from core.refer.parse import Expression
from core.sam.automask import AutoMasks, AutoMaskSettings
from core.sam.precision import precision_of
from core.sam.segmenter import Segmenter
from core.sam.variants import sam_variant
from core.views import render_view

UNTRAINED_NOTICE = ("UNTRAINED weights (random, for trying the interface): masks, scores "
                    "and search results are meaningless")


def automask_for(untrained: bool, **fields) -> AutoMaskSettings:
    """`AutoMaskSettings(**fields)`, with untrained (random) weights keeping every mask: their
    predicted IoUs and stabilities are low, so both thresholds are 0 unless `fields` set them.
    The app and every CLI command run with --untrained use this."""
    if untrained:
        fields = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, **fields}
    return AutoMaskSettings(**fields)


@dataclass(frozen=True)
class EngineSettings:
    """Which models to load. Paths override the cache; `untrained` builds random weights.

    sam None (the default) becomes `core.models.default_sam_model(device)` on construction
    (vit_t on a CPU, vit_b on a GPU, or $SAMCLIP_SAM_MODEL), so `settings.sam` is always a name.
    """

    sam: str | None = None
    sam_checkpoint: str | None = None
    clip: str = config.CLIP_MODEL
    pretrained: str = config.CLIP_PRETRAINED
    clip_checkpoint: str | None = None
    untrained: bool = False
    fast: bool = True
    sam_precision: str = config.SAM_PRECISION
    device: str | None = None

    def __post_init__(self):
        if not self.sam:
            object.__setattr__(self, "sam", default_sam_model(self.device))

    def with_(self, **changes) -> "EngineSettings":
        return replace(self, **changes)


def sam_label(name: str) -> str:
    """What people see for SAM `name` (its registered label, e.g. "fast (MobileSAM)" for
    "vit_t"); the name itself for unknown ones."""
    try:
        return sam_variant(name).label
    except ValueError:
        return name


class Engine:
    """Shared SAM segmenters (one per SAM model asked for, each loaded once) + one CLIP
    embedder, loaded on first use. `settings.sam` is the default SAM; `segmenter_for(name)`
    gives any other (same weights policy: trained, or all untrained)."""

    def __init__(self, settings: EngineSettings | None = None):
        self.settings = settings or EngineSettings()
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        self._segmenters: dict = {}
        self._embedder = None
        self.analyses = AnalysisCache(config.ANALYSIS_CACHE_MB * 1024 * 1024)

    @property
    def untrained(self) -> bool:
        return self.settings.untrained

    @property
    def label(self) -> str:
        """Human description of the loaded models, flagged when untrained."""
        s = self.settings
        text = f"SAM {s.sam} + CLIP {s.clip}/{'untrained' if s.untrained else s.pretrained}"
        return f"{text} -- {UNTRAINED_NOTICE}" if s.untrained else text

    @property
    def segmenter(self):
        """The shared `core.sam.segmenter.Segmenter` of the default SAM (loads it on first use)."""
        return self.segmenter_for(self.settings.sam)

    def segmenter_for(self, name: str | None = None):
        """The shared `Segmenter` of SAM `name` (None: the default), loaded once per process.
        Loading one model never blocks the use of another that is loaded."""
        name = name or self.settings.sam
        found = self._segmenters.get(name)
        if found is not None:
            return found
        with self._lock:
            lock = self._load_locks.setdefault(name, threading.Lock())
        with lock:
            if name not in self._segmenters:
                s = self.settings
                checkpoint = s.sam_checkpoint if name == s.sam else None
                self._segmenters[name] = Segmenter(load_sam(
                    name, checkpoint, untrained=s.untrained, fast=s.fast, device=s.device,
                    precision=s.sam_precision))
            return self._segmenters[name]

    def precision(self, name: str | None = None) -> str:
        """How SAM `name` (None: the default) runs, once loaded: "bf16 (measured: fp32
        0.630 s, bf16 0.840 s)", "fp32 (flags)"; "" when not loaded or the stock model."""
        found = self._segmenters.get(name or self.settings.sam)
        choice = precision_of(found.sam) if found is not None else None
        return choice.describe() if choice is not None else ""

    def automatic_masks(self, image: np.ndarray, settings: AutoMaskSettings, sam: str | None = None,
                        on_partial=None) -> AutoMasks:
        """SAM `sam`'s automatic masks of `image` (H, W, 3) uint8, from the shared per-image
        analysis (`core.analysis`): computed once per image, model and settings. on_partial
        (`core.sam.automask.PartialMasks`) sees the masks found so far when this call computes them."""
        name = sam or self.settings.sam
        return analysis.automatic_masks(self.analyses, name, self.segmenter_for(name), image, settings,
                                        on_partial).auto

    def grounding_candidates(self, image: np.ndarray, settings: GroundingSettings, sam: str | None = None) -> Candidates:
        """The grounding candidates of `image` with their CLIP features (core.refer.ground
        stage 1), from the shared per-image analysis: a second sentence costs only its text."""
        name = sam or self.settings.sam
        return analysis.grounding_candidates(self.analyses, name, self.segmenter_for(name), self.embedder,
                                             image, settings).candidates

    def ground(self, image: np.ndarray, expression: Expression, settings: GroundingSettings,
               sam: str | None = None) -> Grounding:
        """A parsed referring expression grounded in `image`: the shared candidates
        (`grounding_candidates`, computed once per image) scored against this sentence."""
        candidates = self.grounding_candidates(image, settings, sam)
        text = text_features(self.embedder, [expression])[0]
        return choose_for_expression(expression, candidates, settings, text=text)

    def loaded_sams(self) -> list[str]:
        """Names of the SAM models loaded so far."""
        return list(self._segmenters)

    @property
    def embedder(self):
        """The shared `core.embed.Embedder` (loads CLIP on first use)."""
        with self._lock:
            if self._embedder is None:
                s = self.settings
                self._embedder = Embedder(load_clip(s.clip, s.pretrained, checkpoint=s.clip_checkpoint,
                                                    untrained=s.untrained, device=s.device))
            return self._embedder

    def load(self) -> "Engine":
        """Load both models now (raises `core.models.WeightsNotFound` when weights are missing)."""
        _ = self.segmenter, self.embedder
        return self

    def embed_objects(self, image: np.ndarray, masks, view: str) -> np.ndarray:
        """(N, D) CLIP embeddings of N (H, W) bool masks of `image` rendered in `view`."""
        return self.embedder.embed_images([render_view(view, image, m) for m in masks])
