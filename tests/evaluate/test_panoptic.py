"""core.evaluate.panoptic: PQ / SQ / RQ against hand-computed cases."""
from __future__ import annotations

import numpy as np
import pytest

from core.evaluate.panoptic import PanopticQuality
from core.find.labels import id_map_from_masks


def maps(*rows):
    return np.array(rows, dtype=np.int64)


def test_identical_segmentations_score_one():
    gt = maps([1, 1, 2, 2], [1, 1, 2, 2])
    pq = PanopticQuality()
    pq.add_image(gt, {1: 5, 2: 7}, gt, {1: 5, 2: 7})
    assert pq.summary()["all"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 2}


def test_a_partial_match_counts_its_iou():
    gt = maps([1, 1, 1, 1], [0, 0, 0, 0])
    pred = maps([3, 3, 3, 0], [0, 0, 0, 0])         # IoU 3/4
    pq = PanopticQuality()
    pq.add_image(gt, {1: 5}, pred, {3: 5})
    s = pq.summary()["all"]
    assert s["sq"] == pytest.approx(0.75) and s["rq"] == 1.0 and s["pq"] == pytest.approx(0.75)


def test_iou_at_most_half_is_a_false_positive_and_a_false_negative():
    gt = maps([1, 1, 1, 1, 1])
    pred = maps([2, 2, 0, 0, 0])                    # IoU 2/5
    pq = PanopticQuality()
    pq.add_image(gt, {1: 5}, pred, {2: 5})
    c = pq.counts[5]
    assert (c.tp, c.fp, c.fn) == (0, 1, 1)
    assert pq.summary()["all"]["pq"] == 0.0


def test_pq_is_the_mean_over_categories_and_things_and_stuff_are_apart():
    gt = maps([1, 1, 2, 2])
    pred = maps([1, 1, 0, 0])                       # category 5 perfect, category 9 missed
    pq = PanopticQuality(isthing={5: True, 9: False})
    pq.add_image(gt, {1: 5, 2: 9}, pred, {1: 5})
    s = pq.summary()
    assert s["all"]["pq"] == pytest.approx(0.5) and s["things"]["pq"] == 1.0 and s["stuff"]["pq"] == 0.0
    # RQ of the missed one: 0 / (0 + 0 + 1/2) = 0; overall RQ mean (1 + 0) / 2
    assert s["all"]["rq"] == pytest.approx(0.5)


def test_void_is_left_out_of_the_union_and_mostly_void_predictions_are_not_false_positives():
    gt = maps([1, 1, 0, 0], [1, 1, 0, 0])
    pred = maps([4, 4, 4, 4], [4, 4, 6, 6])         # 4: all of gt 1 + 2 void px; 6: all void
    pq = PanopticQuality()
    pq.add_image(gt, {1: 5}, pred, {4: 5, 6: 5})
    c = pq.counts[5]
    assert (c.tp, c.fp, c.fn) == (1, 0, 0) and c.iou == pytest.approx(1.0)


def test_categories_must_agree_to_match():
    gt = maps([1, 1])
    pq = PanopticQuality()
    pq.add_image(gt, {1: 5}, gt, {1: 6})
    assert (pq.counts[5].fn, pq.counts[6].fp) == (1, 1) and pq.summary()["all"]["pq"] == 0.0


def test_overlapping_masks_become_non_overlapping_ids_small_on_top():
    masks = np.zeros((2, 4, 4), bool)
    masks[0] = True
    masks[1, :2, :2] = True
    ids = id_map_from_masks(masks)
    assert (ids == 2).sum() == 4 and (ids == 1).sum() == 12
    assert id_map_from_masks(np.zeros((0, 3, 5), bool)).shape == (3, 5)      # an image with no objects
