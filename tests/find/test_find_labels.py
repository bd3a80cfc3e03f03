"""core.find.labels: labels, semantic map, instances and panoptic on hand-made cases."""
from __future__ import annotations

import numpy as np

from core.find.labels import LabelSettings, given_labels, instances_of, label_candidates, panoptic, semantic_map
from core.find.vocab import Category
from test_find_instances import WordEmbedder, axis, candidates

VOCAB = (Category(18, "dog", True), Category(17, "cat", True), Category(100, "sofa", False))


def test_each_candidate_gets_its_most_probable_label():
    cands = candidates([(0, 0, 20, 20), (30, 0, 50, 20), (60, 0, 99, 30)], [axis(0), axis(1), axis(2)])
    lab = label_candidates(cands, WordEmbedder(), VOCAB)
    assert [lab.category(i).name for i in range(3)] == ["dog", "cat", "sofa"]
    assert np.all(lab.scores > 0.9)
    strict = label_candidates(cands, WordEmbedder(), VOCAB, LabelSettings(min_score=1.01))
    assert strict.labels.tolist() == [-1, -1, -1]


def test_semantic_map_puts_the_best_score_on_top():
    masks = np.zeros((2, 4, 6), bool)
    masks[0, :, :4] = True          # dog, score 0.6
    masks[1, :, 2:] = True          # sofa, score 0.9 (wins the overlap)
    lab = given_labels(masks, [18, 100], VOCAB, scores=[0.6, 0.9])
    sem = semantic_map(lab)
    assert sem[:, :2].tolist() == [[18, 18]] * 4 and sem[:, 2:].tolist() == [[100] * 4] * 4


def test_instances_are_the_things_only():
    masks = np.zeros((3, 4, 6), bool)
    masks[0, :2, :2] = masks[1, 2:, 2:4] = masks[2, :, 4:] = True
    inst = instances_of(given_labels(masks, [18, 100, 17], VOCAB, scores=[0.5, 0.9, 0.7]))
    assert inst.category_ids.tolist() == [17, 18] and inst.names == ["cat", "dog"]


def test_panoptic_gives_every_pixel_at_most_once():
    masks = np.zeros((4, 10, 10), bool)
    masks[0, :, :6] = True            # dog 0.9
    masks[1, :, 4:] = True            # dog 0.8: keeps 40 of 60 pixels (>= half)
    masks[2, :5, 5:] = True           # cat 0.7: all its pixels taken -> dropped
    masks[3, 8:, :] = True            # sofa 0.6: what is left of it
    lab = given_labels(masks, [18, 18, 17, 100], VOCAB, scores=[0.9, 0.8, 0.7, 0.6])
    pan = panoptic(lab, LabelSettings(min_pixels=1))
    assert [(s.id, s.category_id, s.area) for s in pan.segments] == [(1, 18, 60), (2, 18, 40)]
    assert (pan.id_map == 0).sum() == 0
    assert pan.segments[0].bbox == (0.0, 0.0, 6.0, 10.0)


def test_stuff_of_one_category_is_one_segment_and_leftovers_are_void():
    masks = np.zeros((3, 10, 10), bool)
    masks[0, :3, :] = True            # sofa
    masks[1, 5:8, :] = True           # sofa again: merged into the same segment
    masks[2, 2:4, :] = True           # dog: half of it taken -> kept (10 of 20 = 0.5)
    lab = given_labels(masks, [100, 100, 18], VOCAB, scores=[0.9, 0.8, 0.7])
    pan = panoptic(lab, LabelSettings(min_pixels=1))
    assert [(s.category_id, s.area, s.isthing) for s in pan.segments] == [(100, 60, False), (18, 10, True)]
    assert (pan.id_map == 0).sum() == 30
