"""One analysis per image, shared by every caller: SAM's automatic masks and the candidates'
CLIP features, computed once per (SAM model, image, settings) and kept in a bounded cache.

Everything mode, referring expressions (and anything else that needs "all objects of this
image") read the same analysis, so after one of them has run on an image the others cost
only their own, sentence-level part. Concurrent requests for the same analysis wait for
one computation. The cache is bounded by bytes (masks and features), least recently used
first; an analysis bigger than the whole budget is returned but not kept.

Conventions as in core.sam.automask and core.refer.ground: masks (N, H, W) bool at the
image's size, boxes XYXY pixels, features (N, D) float32.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from core.caches import BytesLRU
from core.refer.ground import Candidates, GroundingSettings, image_candidates, kept_candidates
from core.sam.automask import AutoMasks, AutoMaskSettings


@dataclass(frozen=True)
class ImageAnalysis:
    """What is known about one image: `auto` its automatic masks; `candidates` those masks
    filtered for grounding with their CLIP features (None until asked for)."""

    auto: AutoMasks
    candidates: Candidates | None = None

    @property
    def nbytes(self) -> int:
        size = self.auto.masks.nbytes
        if self.candidates is not None:
            size += self.candidates.masks.nbytes + self.candidates.local.nbytes + self.candidates.global_.nbytes
        return int(size)


class AnalysisCache(BytesLRU):
    """Image analyses by (SAM name, image key, settings), within `max_bytes`; thread-safe."""

    def __init__(self, max_bytes: int):
        super().__init__(max_bytes, lambda analysis: analysis.nbytes)
        self._building: dict[tuple, threading.Lock] = {}
        self._building_lock = threading.Lock()

    def get_or_build(self, key: tuple, build) -> ImageAnalysis:
        """The analysis under `key`; else `build()` it once (concurrent callers of the same key
        wait for that one computation) and keep it."""
        found = self.get(key)
        if found is not None:
            return found
        with self._building_lock:
            lock = self._building.setdefault(key, threading.Lock())
        try:
            with lock:
                found = self.get(key)
                if found is None:
                    found = build()
                    self.put(key, found)
        finally:
            with self._building_lock:
                self._building.pop(key, None)
        return found


def analysis_key(sam_name: str, image_key: str, *settings) -> tuple:
    """(SAM name, image key, the settings' reprs): settings records are plain dataclasses."""
    return (sam_name, image_key, *(repr(s) for s in settings))


def automatic_masks(cache: AnalysisCache, sam_name: str, segmenter, image: np.ndarray,
                    settings: AutoMaskSettings, on_partial=None) -> ImageAnalysis:
    """The analysis of `image` with at least its automatic masks (computed once; others wait).
    on_partial (`core.sam.automask.PartialMasks`): the masks found so far, while this call
    computes them (not called when they are cached or another caller is computing them)."""
    emb = segmenter.set_image(image)
    return cache.get_or_build(analysis_key(sam_name, emb.key, settings),
                              lambda: ImageAnalysis(segmenter.everything(emb, settings, on_partial)))


def grounding_candidates(cache: AnalysisCache, sam_name: str, segmenter, embedder, image: np.ndarray,
                         settings: GroundingSettings) -> ImageAnalysis:
    """The analysis of `image` with its grounding candidates and their CLIP features, from
    the automatic masks of `settings.automask` (computed once per image and settings).
    Raises core.refer.ground.NoCandidatesError when SAM finds nothing usable."""
    base = automatic_masks(cache, sam_name, segmenter, image, settings.automask)
    def build() -> ImageAnalysis:
        masks, _ = kept_candidates(base.auto, settings)
        return ImageAnalysis(base.auto, image_candidates(None, embedder, image, settings, masks=masks))

    return cache.get_or_build(analysis_key(sam_name, segmenter.set_image(image).key, settings), build)

