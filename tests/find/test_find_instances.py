"""core.find.instances: deciding instances against competitors, parts, directions, examples."""
from __future__ import annotations

import numpy as np
import pytest

from core.find.instances import (FindSettings, drop_parts, find_all, find_like, phrase_probabilities,
                                 split_at_widest_gap)
from core.refer.ground import Candidates

D = 16
WORDS = ("dog", "cat", "sofa", "person")


class WordEmbedder:
    """Text features: one axis per known word in the prompt, else a fixed 'other' direction."""

    def embed_texts(self, texts):
        rows = []
        for text in texts:
            v = np.zeros(D, np.float32)
            hits = [i for i, w in enumerate(WORDS) if f" {w}" in f" {text.lower()}"]
            if hits:
                v[hits[0]] = 1.0
            else:
                v[8 + hash(text) % 8] = 1.0
            rows.append(v)
        return np.asarray(rows)


def axis(i: int, noise: float = 0.0) -> np.ndarray:
    v = np.zeros(D, np.float32)
    v[i] = 1.0
    v[(i + 5) % D] = noise
    return v / np.linalg.norm(v)


def candidates(boxes, feats, hw=(40, 100)) -> Candidates:
    masks = np.zeros((len(boxes), *hw), bool)
    for m, (x1, y1, x2, y2) in zip(masks, boxes):
        m[y1:y2, x1:x2] = True
    return Candidates(masks, np.asarray(boxes, np.float32), np.asarray(feats, np.float32),
                      np.zeros((len(boxes), 0), np.float32), hw, "global_local")


def test_all_the_dogs_are_found_and_counted():
    cands = candidates([(0, 0, 20, 20), (30, 0, 50, 20), (60, 0, 80, 20), (85, 0, 99, 20)],
                       [axis(0), axis(1), axis(0, 0.2), axis(2)])
    found = find_all(cands, WordEmbedder(), "all the dogs")
    assert found.label == "dog" and found.count == 2 and sorted(found.index.tolist()) == [0, 2]
    assert found.summary() == "2 dogs" and np.all(found.scores >= 0.5)
    assert find_all(cands, WordEmbedder(), "the cat").summary() == "1 cat"


def test_a_phrase_that_does_not_win_finds_nothing():
    cands = candidates([(0, 0, 20, 20)], [axis(1)])
    found = find_all(cands, WordEmbedder(), "dogs")
    assert found.count == 0 and found.summary() == "no dog"


def test_direction_orders_the_instances():
    cands = candidates([(60, 0, 80, 20), (0, 0, 20, 20), (30, 0, 50, 20)], [axis(0)] * 3)
    left = find_all(cands, WordEmbedder(), "the dogs on the left")
    assert left.direction == "left" and left.index.tolist() == [1, 2, 0]
    right = find_all(cands, WordEmbedder(), "the dogs on the right")
    assert right.index.tolist() == [0, 2, 1]


def test_a_part_inside_an_accepted_whole_is_dropped():
    cands = candidates([(0, 0, 40, 40), (5, 5, 15, 15), (60, 0, 80, 20)], [axis(0)] * 3)
    found = find_all(cands, WordEmbedder(), "dogs")
    assert sorted(found.index.tolist()) == [0, 2]
    assert drop_parts(cands.masks, np.array([1, 0, 2]), 0.9).tolist() == [0, 2]


def test_no_noun_is_a_clear_error():
    cands = candidates([(0, 0, 20, 20)], [axis(0)])
    with pytest.raises(ValueError, match="no noun"):
        find_all(cands, WordEmbedder(), "on the left")


def test_probabilities_are_a_softmax_against_the_competitors():
    feats = np.eye(3, dtype=np.float32)
    p = phrase_probabilities(feats, feats[0], feats[1:], temperature=1.0)
    e = np.e
    np.testing.assert_allclose(p, [e / (e + 2), 1 / (e + 1 + 1), 1 / (1 + e + 1)], rtol=1e-6)


def test_more_like_this_takes_the_group_that_stands_out():
    cands = candidates([(0, 0, 10, 10), (20, 0, 30, 10), (40, 0, 50, 10), (60, 0, 70, 10)],
                       [axis(3), axis(3, 0.1), axis(1), axis(2)])
    found = find_like(cands, axis(3))
    assert sorted(found.index.tolist()) == [0, 1] and found.count == 2
    assert split_at_widest_gap(np.array([0.9, 0.88, 0.1])) == (0.88, 0.1)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="min_probability"):
        FindSettings(min_probability=2.0)
