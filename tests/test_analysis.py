"""core.analysis: one analysis per image, shared, computed once, bounded."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from core.analysis import AnalysisCache, ImageAnalysis, automatic_masks, grounding_candidates
from core.refer import GroundingSettings
from core.sam.automask import AutoMasks, AutoMaskSettings

LOOSE = AutoMaskSettings(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, max_masks=8)


@pytest.fixture
def counted(tiny_segmenter, monkeypatch):
    """The tiny segmenter with a count of its everything() runs."""
    calls = []
    real = tiny_segmenter.everything

    def everything(emb, settings=None, on_partial=None):
        calls.append(emb.key)
        return real(emb, settings, on_partial)

    monkeypatch.setattr(tiny_segmenter, "everything", everything)
    return tiny_segmenter, calls


def test_automatic_masks_are_computed_once_per_image_and_settings(counted, coco_image):
    segmenter, calls = counted
    cache = AnalysisCache(1 << 30)
    image = coco_image[0]
    first = automatic_masks(cache, "vit_tiny", segmenter, image, LOOSE)
    again = automatic_masks(cache, "vit_tiny", segmenter, image, LOOSE)
    assert again is first and len(calls) == 1
    other = AutoMaskSettings(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    automatic_masks(cache, "vit_tiny", segmenter, image, other)
    automatic_masks(cache, "other_sam", segmenter, image, LOOSE)
    assert len(calls) == 3                                   # other settings, other model: new runs


def test_concurrent_requests_share_one_computation(counted, coco_image):
    segmenter, calls = counted
    cache, results = AnalysisCache(1 << 30), []
    barrier = threading.Barrier(3)
    image = np.ascontiguousarray(coco_image[0][::-1])      # an image no other test encoded

    def ask():
        barrier.wait()
        results.append(automatic_masks(cache, "vit_tiny", segmenter, image, LOOSE))

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len(calls) == 1 and all(r is results[0] for r in results)


def test_grounding_candidates_reuse_the_automatic_masks(counted, embedder, coco_image):
    segmenter, calls = counted
    cache = AnalysisCache(1 << 30)
    settings = GroundingSettings(automask=LOOSE)
    image = coco_image[0]
    base = automatic_masks(cache, "vit_tiny", segmenter, image, LOOSE)
    found = grounding_candidates(cache, "vit_tiny", segmenter, embedder, image, settings)
    assert len(calls) == 1 and found.auto is base.auto
    cand = found.candidates
    assert len(cand) >= 1 and cand.local.shape[0] == len(cand) and cand.method == settings.method
    assert grounding_candidates(cache, "vit_tiny", segmenter, embedder, image, settings) is found


def _analysis(nbytes: int) -> ImageAnalysis:
    masks = np.zeros((1, 1, nbytes), bool)
    return ImageAnalysis(AutoMasks(masks=masks, scores=np.zeros(1, np.float32), boxes=np.zeros((1, 4), np.float32)))


def test_the_cache_is_bounded_by_bytes():
    cache = AnalysisCache(250)
    for i in range(3):
        cache.put(("k", i), _analysis(100))
    assert cache.get(("k", 0)) is None and cache.get(("k", 2)) is not None
    cache.put(("huge",), _analysis(1000))
    assert cache.get(("huge",)) is None                      # bigger than the budget: not kept
