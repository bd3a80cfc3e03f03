"""Global-Local CLIP as published, pinned down without trained weights.

Token masking (all-ones mask = plain feature; tokens outside the mask cannot matter from the
masking block on), the mixing formulas against hand-computed values, the noun phrase of real
RefCOCO sentences, the local view's fill and crop geometry on a COCO128 mask, the expression
length limit and the memory of the default path on a very wide image.
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from core.io.coco import annotation_mask
from core.refer import (
    MAX_EXPRESSION_CHARS,
    GroundingSettings,
    TextFeatures,
    candidate_limit,
    cosine,
    fill_colour,
    global_local_scores,
    ground,
    local_view,
    mix_features,
    parse,
)

# ------------------------------------------------------------------------------- mixing formulas


def test_mix_features_is_a_weighted_sum():
    g, l = np.array([[1.0, 0.0], [2.0, 2.0]]), np.array([[0.0, 1.0], [0.0, 4.0]])
    np.testing.assert_allclose(mix_features(g, l, 0.85), [[0.85, 0.15], [1.7, 1.7 + 0.6]], atol=1e-6)
    np.testing.assert_allclose(mix_features([1.0, 3.0], [3.0, 1.0], 0.5), [2.0, 2.0])
    with pytest.raises(ValueError, match="same shape"):
        mix_features(g, l[:1], 0.5)


def test_cosine_does_not_need_unit_vectors():
    np.testing.assert_allclose(cosine(np.array([[3.0, 4.0], [0.0, 2.0]]), np.array([0.0, 10.0])), [0.8, 1.0],
                               atol=1e-6)
    assert cosine(np.zeros((2, 0)), np.ones(3)).tolist() == [0.0, 0.0]


def _text(sentence, phrase):
    return TextFeatures(sentence=np.asarray(sentence, np.float32), noun_phrase=np.asarray(phrase, np.float32),
                        noun_prompt=np.zeros(2, np.float32))


def test_global_local_scores_match_hand_computed_values():
    # text = 0.5 * (2, 0) + 0.5 * (0, 4) = (1, 2); raw features, as the authors mix them
    text = _text([2.0, 0.0], [0.0, 4.0])
    glob = np.array([[1.0, 0.0], [0.0, 3.0]], np.float32)
    local = np.array([[0.0, 1.0], [4.0, 0.0]], np.float32)
    s = GroundingSettings(visual_weight=0.75, text_weight=0.5)
    scores, ls, gs = global_local_scores(local, glob, text, s)
    # visual_0 = 0.75 (1, 0) + 0.25 (0, 1) = (0.75, 0.25); visual_1 = (0, 2.25) + (1, 0) = (1, 2.25)
    def cos(a, b):
        return np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)
    t = np.array([1.0, 2.0])
    np.testing.assert_allclose(scores, [cos([0.75, 0.25], t), cos([1.0, 2.25], t)], atol=1e-6)
    np.testing.assert_allclose(ls, [cos([0, 1], t), cos([1, 0], t)], atol=1e-6)
    np.testing.assert_allclose(gs, [cos([1, 0], t), cos([0, 1], t)], atol=1e-6)
    # the raw norms matter: normalising first changes visual_1 to 0.75 (0, 1) + 0.25 (1, 0)
    unit, _, _ = global_local_scores(local, glob, text, s.with_(normalise_features=True))
    t_unit = 0.5 * np.array([1.0, 0.0]) + 0.5 * np.array([0.0, 1.0])
    np.testing.assert_allclose(unit, [cos([0.75, 0.25], t_unit), cos([0.25, 0.75], t_unit)], atol=1e-6)
    # r weighs the sentence: r = 1 scores against the sentence only
    only_sentence, _, _ = global_local_scores(local, glob, text, s.with_(text_weight=1.0))
    np.testing.assert_allclose(only_sentence, [cos([0.75, 0.25], [1, 0]), cos([1.0, 2.25], [1, 0])], atol=1e-6)
    # the local / global ablations score one feature alone
    np.testing.assert_allclose(global_local_scores(local, glob, text, s.with_(scoring="local"))[0], ls)
    np.testing.assert_allclose(global_local_scores(local, glob, text, s.with_(scoring="global"))[0], gs)


def test_published_defaults():
    s = GroundingSettings()
    assert (s.method, s.scoring, s.visual_weight, s.text_weight, s.masking_block, s.local_fill, s.top_k) == \
        ("global_local", "mixed", 0.85, 0.5, 9, "mean", 3)
    assert s.token_mask_resize == "bilinear" and s.normalise_features is False


# ------------------------------------------------------------------------------- the noun phrase


@pytest.mark.parametrize("sentence,phrase", [
    ("the man in a red shirt on the left", "the man"),
    ("a woman holding an umbrella", "a woman"),
    ("left dog", "left dog"),
    ("man with black apron", "man"),
    ("blue shirt on left", "blue shirt"),
    ("the leftmost elephant", "the leftmost elephant"),
    ("A white car parked below the tree.", "a white car"),
    ("second giraffe from the left", "second giraffe"),
])
def test_noun_phrase_of_refcoco_sentences(sentence, phrase):
    assert parse(sentence).noun_phrase == phrase


def test_noun_phrase_falls_back_to_the_sentence():
    # spaCy tags "zebra" X here and finds no noun chunk at all
    e = parse("zebra far right")
    assert e.noun_phrase == "zebra far right"


def test_long_expressions_are_refused_before_parsing():
    parse("dog " * (MAX_EXPRESSION_CHARS // 4 - 1))  # just under the limit: fine
    with pytest.raises(ValueError, match=f"at most {MAX_EXPRESSION_CHARS} characters"):
        parse("the dog " * 200)


# ------------------------------------------------------------------------------- the local view


def test_local_view_fill_and_crop_geometry_on_a_coco_mask(coco_image, embedder):
    image, info, anns = coco_image
    ann = max(anns, key=lambda a: a["area"])
    mask = annotation_mask(ann, info["height"], info["width"])
    ys, xs = np.nonzero(mask)
    x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    fill = fill_colour("mean", embedder)
    assert fill == (123, 117, 104)  # CLIP's normalisation mean, zero after normalisation
    view = local_view(image, mask, fill)
    assert view.shape == (y2 - y1, x2 - x1, 3) and view.dtype == np.uint8
    inside = mask[y1:y2, x1:x2]
    np.testing.assert_array_equal(view[inside], image[y1:y2, x1:x2][inside])
    assert (view[~inside] == np.array(fill, np.uint8)).all() and (~inside).any()
    assert local_view(image, mask, None).tolist() == image[y1:y2, x1:x2].tolist()     # local_fill "none"
    assert (local_view(image, mask, fill_colour("black"))[~inside] == 0).all()
    # then squashed (not cropped) to CLIP's input: the box fills the whole 224 x 224 square
    squashed = embedder.resize_to_input(view)
    assert squashed.shape == (224, 224, 3)
    pixels = embedder.squashed_pixels([np.full((5, 9, 3), fill, np.uint8)])
    assert pixels.shape == (1, 3, 224, 224) and float(pixels.abs().max()) < 0.02  # the mean normalises to ~0


# ------------------------------------------------------------------------------- huge images, candidate caps


def test_candidate_cap_follows_image_size():
    s = GroundingSettings()
    assert candidate_limit(s, (480, 640)) == 64
    assert candidate_limit(s, (800, 40000)) == 2 ** 28 // (800 * 40000) == 8
    assert candidate_limit(s.with_(max_candidate_pixels=None, max_candidates=None), (800, 40000)) is None
    assert candidate_limit(s.with_(max_candidate_pixels=10), (800, 40000)) == 1


def test_very_wide_image_is_never_padded_to_a_square(embedder):
    """An 800 x 40000 image ran out of memory when its global views were padded to squares;
    the default path squashes the whole image to CLIP's input instead."""
    h, w = 400, 20000
    image = np.zeros((h, w, 3), np.uint8)
    image[:, ::2] = 255
    masks = np.zeros((2, h, w), bool)
    masks[0, 100:300, 1000:1400] = True
    masks[1, 50:350, 15000:19000] = True
    tracemalloc.start()
    try:
        r = ground(None, embedder, image, "the stripes on the right", candidate_masks=masks)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.source_index[r.chosen] in (0, 1) and r.mask.shape == (h, w)
    # a padded square would be w * w * 3 = 1.2 GB; the masks and a few image-sized buffers are ~100 MB
    assert peak < 200 * 2 ** 20, peak
