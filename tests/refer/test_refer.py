"""core.refer: parse(), choose(), ground() (untrained models, small settings)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.sam.automask import AutoMaskSettings
from core.refer import (
    DIRECTIONS,
    Expression,
    GroundingSettings,
    NoCandidatesError,
    choose,
    direction_order,
    filter_candidates,
    ground,
    mix_scores,
    pad_to_square,
    parse,
)

# ------------------------------------------------------------------------------- parse

# (sentence, noun, direction, ordinal): RefCOCO / RefCOCOg style, incl. real typos.
PARSE_CASES = [
    ("the two dogs on the left", "dog", "left", 1),
    ("man with black apron", "man", None, 1),
    ("blue shirt on left", "shirt", "left", 1),
    ("second from the right", None, "right", 2),
    ("left guy", "guy", "left", 1),
    ("guy on left in white", "guy", "left", 1),
    ("Top left corner pizza", "pizza", "top-left", 1),
    ("botom right", None, "bottom-right", 1),
    ("oon left", None, "left", 1),
    ("bottom middle", None, "bottom", 1),
    ("the man in the middle", "man", "center", 1),
    ("left", None, "left", 1),
    ("zebra far right", "zebra", "right", 1),
    ("kid upper left with hat", "kid", "top-left", 1),
    ("woman standing behind the counter", "woman", None, 1),
    ("THE LEFTMOST ELEPHANT!", "elephant", "left", 1),
    ("white car parked below", "car", "bottom", 1),
    ("second giraffe from the left", "giraffe", "left", 2),
    ("person in red", "person", None, 1),
    ("bowl of broccoli on the right", "bowl", "right", 1),
    ("piece of cake on the left", "cake", "left", 1),
    ("the light on the left", "light", "left", 1),
    ("man holding cup in right hand", "man", None, 1),
    ("guy standing up", "guy", None, 1),
    ("upside down umbrella", "umbrella", None, 1),
    ("rigth zebra", "zebra", "right", 1),
    ("leftside man", "man", "left", 1),
    ("top-left bear", "bear", "top-left", 1),
    ("far left person", "person", "left", 1),
    ("the person on the far left side of the picture", "person", "left", 1),
    ("2nd from left", None, "left", 2),
    ("center guy", "guy", "center", 1),
    ("elephant in front", "elephant", None, 1),
    ("tennis player", "player", None, 1),
    ("lower left", None, "bottom-left", 1),
    ("girl w/ pink shirt", "girl", None, 1),
    ("sheep to the left of the dog", "sheep", "left", 1),
    ("clock tower", "tower", None, 1),
    ("flower on right", "flower", "right", 1),
    ("the one on the left", None, "left", 1),
    ("Dog.", "dog", None, 1),
    ("giraffe, rightmost", "giraffe", "right", 1),
    ("bear bottom left corner", "bear", "bottom-left", 1),
    ("third car from the right", "car", "right", 3),
    ("upper right umbrella", "umbrella", "top-right", 1),
    ("the cat on top", "cat", "top", 1),
    ("pizza slice closest to the bottom", "slice", "bottom", 1),
    ("the sheep in the centre", "sheep", "center", 1),
    ("lady on rihgt in black", "lady", "right", 1),
    ("the midle horse", "horse", "center", 1),
    ("bike on the riht", "bike", "right", 1),
    ("lft chair", "chair", "left", 1),
    ("the guy on the right hand side", "guy", "right", 1),
    ("a man, left side, wearing a blue shirt", "man", "left", 1),
    ("person that is second from left", "person", "left", 2),
    ("the 3rd elephant from right", "elephant", "right", 3),
    ("man in the top right", "man", "top-right", 1),
]


@pytest.mark.parametrize("text,noun,direction,ordinal", PARSE_CASES)
def test_parse_refcoco_style(text, noun, direction, ordinal):
    e = parse(text)
    assert (e.noun, e.direction, e.ordinal) == (noun, direction, ordinal), e
    assert e.text == text


@pytest.mark.parametrize("variant", ["the left dog", "The Left Dog", "THE LEFT DOG!!", "left dog",
                                     "left dog.", "  the left dog  ", "the left-most dog", "dog, left"])
def test_parse_case_punctuation_and_determiner_do_not_matter(variant):
    e = parse(variant)
    assert (e.noun, e.direction, e.ordinal) == ("dog", "left", 1)


def test_parse_records_corrections_and_words():
    e = parse("the botom rigth cat")
    assert e.direction == "bottom-right"
    assert e.corrections == (("botom", "bottom"), ("rigth", "right"))
    assert e.direction_words == ("bottom", "right")
    assert e.subject == "cat"


@pytest.mark.parametrize("word", ["light", "night", "tower", "flower", "power", "lover", "fiddle",
                                  "loft", "lift", "bright", "stop", "abode", "bellow", "enter"])
def test_ordinary_words_near_direction_words_are_not_directions(word):
    e = parse(f"the {word}")
    assert e.direction is None and e.corrections == ()


def test_expression_json_and_prompt():
    e = parse("the second dog from the left")
    d = json.loads(json.dumps(e.to_dict()))
    assert d["noun"] == "dog" and d["direction"] == "left" and d["ordinal"] == 2
    assert d["noun_prompt"] == "a photo of a dog."
    assert parse("the one on the left").noun_prompt == "a photo of the one."
    assert isinstance(e, Expression)
    with pytest.raises(Exception):
        e.noun = "cat"  # frozen


@pytest.mark.parametrize("bad", ["", "   ", "?!", None, 3, b"dog", ["dog"]])
def test_parse_rejects_empty_or_non_text(bad):
    with pytest.raises(ValueError, match="referring expression"):
        parse(bad)


def test_parse_command_prints_json(capsys):
    from core.cli.main import main

    assert main(["parse", "the left dog"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["noun"] == "dog" and out["direction"] == "left"
    assert main(["parse", ""]) == 2
    assert "must not be empty" in capsys.readouterr().err


# ------------------------------------------------------------------------------- choose

def _grid_boxes():
    """A 3x3 grid of 10 px boxes in a 300x300 image, row-major from the top-left, and their centres."""
    boxes = np.array([[x, y, x + 10, y + 10] for y in (20, 145, 270) for x in (20, 145, 270)], float)
    return boxes


# index in the 3x3 grid (row-major) each direction must pick when all candidates count
GRID_EXPECTED = {"left": None, "right": None, "top": None, "bottom": None, "center": 4,
                 "top-left": 0, "top-right": 2, "bottom-left": 6, "bottom-right": 8}


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("image_hw", [None, (300, 300)])
def test_choose_every_direction_on_a_grid(direction, image_hw):
    boxes = _grid_boxes()
    scores = np.linspace(1.0, 0.2, 9)  # index 0 best
    got = choose(direction, boxes, scores, top_k=None, image_hw=image_hw)
    expected = GRID_EXPECTED[direction]
    if expected is None:
        # a whole column / row ties on position: the tie goes to the best score in it
        column = {"left": [0, 3, 6], "right": [2, 5, 8], "top": [0, 1, 2], "bottom": [6, 7, 8]}[direction]
        expected = column[0]
    assert got == expected


def test_choose_no_direction_is_best_score_and_first_on_ties():
    boxes = _grid_boxes()[:4]
    assert choose(None, boxes, [0.1, 0.9, 0.3, 0.2]) == 1
    assert choose(None, boxes, [0.5, 0.9, 0.9, 0.2]) == 1


def test_choose_only_looks_at_top_k():
    boxes = np.array([[0, 0, 10, 10], [100, 0, 110, 10], [200, 0, 210, 10], [300, 0, 310, 10]], float)
    scores = np.array([0.1, 0.9, 0.8, 0.7])  # the leftmost box is the worst
    assert choose("left", boxes, scores, top_k=3) == 1
    assert choose("left", boxes, scores, top_k=None) == 0
    assert choose("left", boxes, scores, top_k=1) == 1
    assert choose("right", boxes, scores, top_k=2) == 2
    assert choose("right", boxes, scores, top_k=4) == 3


def test_choose_ordinal_counts_from_the_side():
    boxes = np.array([[x, 0, x + 10, 10] for x in (40, 0, 30, 10, 20)], float)  # centres 45, 5, 35, 15, 25
    scores = np.ones(5)
    from_left = [choose("left", boxes, scores, top_k=None, ordinal=k) for k in range(1, 6)]
    assert from_left == [1, 3, 4, 2, 0]
    from_right = [choose("right", boxes, scores, top_k=None, ordinal=k) for k in range(1, 6)]
    assert from_right == [0, 2, 4, 3, 1]
    # an ordinal beyond the candidates is clamped to the last one
    assert choose("left", boxes, scores, top_k=None, ordinal=9) == 0
    # top_k is raised to the ordinal: "third from the left" among the 3 best when top_k=2
    assert choose("left", boxes, [0.9, 0.8, 0.7, 0.1, 0.1], top_k=2, ordinal=3) == 0


def test_choose_ties_on_position_go_to_the_better_score():
    boxes = np.array([[0, 0, 10, 10], [0, 50, 10, 60], [50, 0, 60, 10]], float)  # 0 and 1 share x
    assert choose("left", boxes, [0.5, 0.7, 0.9]) == 1
    assert choose("left", boxes, [0.7, 0.5, 0.9]) == 0
    assert choose("left", boxes, [0.7, 0.5, 0.9], ordinal=2) == 1
    # equal score and position: the lower index
    assert choose("left", boxes, [0.5, 0.5, 0.9]) == 0


def test_choose_center_with_and_without_image_hw():
    # a row of three on the left half of a 400 px wide image
    boxes = np.array([[0, 0, 20, 20], [60, 0, 80, 20], [120, 0, 140, 20]], float)
    scores = np.array([0.9, 0.8, 0.7])
    assert choose("center", boxes, scores) == 1               # the middle one of the row
    assert choose("center", boxes, scores, image_hw=(20, 400)) == 2  # nearest the image centre


def test_choose_corner_combines_axes():
    boxes = np.array([[0, 80, 10, 90], [80, 0, 90, 10], [10, 10, 20, 20]], float)
    scores = np.ones(3)
    assert choose("top-left", boxes, scores, image_hw=(100, 100)) == 2
    assert choose("bottom-left", boxes, scores, image_hw=(100, 100)) == 0
    assert choose("top-right", boxes, scores, image_hw=(100, 100)) == 1


def test_direction_order_is_a_permutation():
    boxes = _grid_boxes()
    scores = np.arange(9.0)
    for d in DIRECTIONS:
        order = direction_order(d, boxes, scores)
        assert sorted(order.tolist()) == list(range(9))


@pytest.mark.parametrize("kwargs,match", [
    (dict(boxes=np.zeros((2, 3)), scores=np.zeros(2)), "boxes must be an"),
    (dict(boxes=np.zeros(4), scores=np.zeros(1)), "boxes must be an"),
    (dict(boxes=np.zeros((2, 4)), scores=np.zeros(3)), "scores must be"),
    (dict(boxes=np.zeros((0, 4)), scores=np.zeros(0)), "no candidates"),
    (dict(boxes=np.array([[10, 0, 0, 10.0]]), scores=np.zeros(1)), "x2 >= x1"),
    (dict(boxes=np.array([[0, 0, np.nan, 10.0]]), scores=np.zeros(1)), "finite"),
    (dict(boxes=np.zeros((1, 4)), scores=np.zeros(1), top_k=0), "top_k"),
    (dict(boxes=np.zeros((1, 4)), scores=np.zeros(1), ordinal=0), "ordinal"),
    (dict(boxes=np.zeros((1, 4)), scores=np.zeros(1), ordinal=1.5), "ordinal"),
    (dict(boxes=np.zeros((1, 4)), scores=np.zeros(1), image_hw=(0, 10)), "image_hw"),
    (dict(boxes=np.zeros((1, 4)), scores=np.zeros(1), image_hw=5), "image_hw"),
])
def test_choose_rejects_bad_input(kwargs, match):
    kwargs.setdefault("direction", "left")
    with pytest.raises(ValueError, match=match):
        choose(**kwargs)


def test_choose_rejects_unknown_direction():
    with pytest.raises(ValueError, match="unknown direction"):
        choose("west", np.zeros((1, 4)), np.zeros(1))


def test_choose_matches_brute_force_on_random_layouts():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 8))
        xy = rng.uniform(0, 200, size=(n, 2))
        wh = rng.uniform(1, 50, size=(n, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1)
        scores = rng.uniform(size=n)
        k = int(rng.integers(1, 5))
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        top = sorted(range(n), key=lambda i: -scores[i])[:k]
        assert choose("left", boxes, scores, top_k=k) == min(top, key=lambda i: cx[i])
        assert choose("right", boxes, scores, top_k=k) == max(top, key=lambda i: cx[i])
        assert choose(None, boxes, scores, top_k=k) == top[0]


# ------------------------------------------------------------------------------- grounding helpers

def test_filter_candidates_drops_tiny_and_duplicates():
    masks = np.zeros((5, 100, 100), bool)
    masks[0, :50, :50] = True            # big
    masks[1, :50, :49] = True            # near-duplicate of 0 (IoU 0.98), worse quality
    masks[2, 60:, 60:] = True            # big, distinct
    masks[3, 0, 0] = True                # tiny (1 px)
    # 4 stays empty
    keep = filter_candidates(masks, [0.9, 0.5, 0.7, 0.99, 0.1], min_area_fraction=0.001, duplicate_iou=0.9)
    assert keep.tolist() == [0, 2]
    keep = filter_candidates(masks, [0.5, 0.9, 0.7, 0.99, 0.1], min_area_fraction=0.001, duplicate_iou=0.9)
    assert keep.tolist() == [1, 2]
    assert filter_candidates(masks, None, min_area_fraction=0.0, duplicate_iou=1.0).tolist() == [0, 1, 2, 3]
    assert filter_candidates(masks, None, min_area_fraction=0.0, max_candidates=2).tolist() == [0, 2]
    with pytest.raises(ValueError, match="bool"):
        filter_candidates(masks.astype(np.uint8))


def test_mix_scores_and_padding():
    local, glob = np.array([0.2, 0.4]), np.array([0.6, 0.0])
    np.testing.assert_allclose(mix_scores(local, glob, "mixed", 0.25), [0.3, 0.3], atol=1e-7)
    np.testing.assert_allclose(mix_scores(local, glob, "local", 0.25), local)
    np.testing.assert_allclose(mix_scores(local, glob, "global", 0.25), glob)
    img = np.full((10, 30, 3), 200, np.uint8)
    sq = pad_to_square(img)
    assert sq.shape == (30, 30, 3) and sq[10:20].min() == 200 and sq[:10].max() == 0


@pytest.mark.parametrize("kwargs", [dict(scoring="both"), dict(global_weight=1.5), dict(local_view="nope"),
                                    dict(global_emphasis="grey"), dict(top_k=0), dict(duplicate_iou=0.0),
                                    dict(automask=[("points_per_side", 4)]), dict(method="clipseg"),
                                    dict(visual_weight=-0.1), dict(text_weight=2), dict(masking_block=9.0),
                                    dict(masking_block=True), dict(local_fill="grey"),
                                    dict(token_mask_resize="nearest"), dict(normalise_features=1),
                                    dict(max_candidate_pixels=0)])
def test_grounding_settings_are_validated(kwargs):
    with pytest.raises(ValueError):
        GroundingSettings(**kwargs)


def _three_objects():
    """A 60x120 image with three coloured squares left to right, and their masks."""
    image = np.zeros((60, 120, 3), np.uint8)
    masks = np.zeros((3, 60, 120), bool)
    for i, x in enumerate((10, 50, 90)):
        masks[i, 20:40, x:x + 20] = True
        image[masks[i]] = (255, 60 * i, 0)
    return image, masks


def test_ground_with_given_candidates_and_oracle_scores():
    image, masks = _three_objects()
    scores = np.array([0.2, 0.9, 0.5])
    r = ground(None, None, image, "the square on the left", candidate_masks=masks, candidate_scores=scores)
    assert r.direction_applied and r.expression.direction == "left"
    assert r.source_index.tolist() == [1, 2, 0]          # ranked by score
    assert r.source_index[r.chosen] == 0                 # the leftmost of the top 3
    np.testing.assert_array_equal(r.mask, masks[0])
    np.testing.assert_allclose(r.box, [10, 20, 30, 40])
    r2 = ground(None, None, image, "the square on the left", candidate_masks=masks, candidate_scores=scores,
                settings=GroundingSettings(orientation=False))
    assert not r2.direction_applied and r2.source_index[r2.chosen] == 1
    r3 = ground(None, None, image, "the square on the left", candidate_masks=masks, candidate_scores=scores,
                settings=GroundingSettings(top_k=1))
    assert r3.source_index[r3.chosen] == 1
    r4 = ground(None, None, image, "the middle square", candidate_masks=masks, candidate_scores=scores)
    assert r4.source_index[r4.chosen] == 1
    summary = json.loads(json.dumps(r.summary(top=2)))
    assert summary["n_candidates"] == 3 and len(summary["candidates"]) == 2


def test_ground_rejects_bad_candidates():
    image, masks = _three_objects()
    with pytest.raises(ValueError, match="do not match|are \\("):
        ground(None, None, image, "left", candidate_masks=masks[:, :10], candidate_scores=np.ones(3))
    with pytest.raises(ValueError, match="candidate_scores must be"):
        ground(None, None, image, "left", candidate_masks=masks, candidate_scores=np.ones(2))
    with pytest.raises(ValueError, match="needs candidate_masks"):
        ground(None, None, image, "left", candidate_scores=np.ones(3))
    with pytest.raises(ValueError, match="empty"):
        ground(None, None, image, "left", candidate_masks=np.zeros((2, 60, 120), bool), candidate_scores=np.ones(2))
    with pytest.raises(NoCandidatesError):
        ground(None, None, image, "left", candidate_masks=np.zeros((0, 60, 120), bool))
    with pytest.raises(ValueError, match="referring expression"):
        ground(None, None, image, "", candidate_masks=masks, candidate_scores=np.ones(3))


def test_ground_scores_with_clip(embedder):
    """CLIP scoring end to end (untrained CLIP): scores are cosines and mixing follows the settings."""
    image, masks = _three_objects()
    # the score_mix variant: scores are mixed
    mixed = ground(None, embedder, image, "the red square on the right", candidate_masks=masks,
                   settings=GroundingSettings(method="score_mix", scoring="mixed", global_weight=0.25))
    assert len(mixed) == 3 and np.all(np.abs(mixed.scores) <= 1.0 + 1e-5)
    np.testing.assert_allclose(mixed.scores, 0.25 * mixed.global_scores + 0.75 * mixed.local_scores, atol=1e-6)
    assert np.all(np.diff(mixed.scores) <= 0)  # best first
    # the direction rule picks the rightmost of the top 3 = the rightmost square
    assert mixed.source_index[mixed.chosen] == 2
    local = ground(None, embedder, image, "the red square on the right", candidate_masks=masks,
                   settings=GroundingSettings(method="score_mix", scoring="local", local_view="mask",
                                              global_emphasis="blur"))
    np.testing.assert_allclose(local.scores, local.local_scores)
    order = np.argsort(-local.local_scores, kind="stable")
    np.testing.assert_array_equal(local.source_index, local.source_index[order])
    # the default, Global-Local as published: one cosine of mixed features per candidate
    gl = ground(None, embedder, image, "the red square on the right", candidate_masks=masks)
    assert gl.settings.method == "global_local" and gl.source_index[gl.chosen] == 2
    assert np.all(np.abs(gl.scores) <= 1.0 + 1e-5) and np.all(np.diff(gl.scores) <= 0)
    assert gl.summary()["method"] == "global_local"
    only_global = ground(None, embedder, image, "the red square", candidate_masks=masks,
                         settings=GroundingSettings(scoring="global"))
    np.testing.assert_allclose(only_global.scores, only_global.global_scores)
    assert np.all(only_global.local_scores == 0)  # not computed


def test_ground_with_sam_candidates(tiny_segmenter, embedder, coco_image):
    image = coco_image[0][::4, ::4].copy()  # small: untrained tiny SAM, 2 cores
    settings = GroundingSettings(automask=AutoMaskSettings(points_per_side=2, pred_iou_thresh=0.0,
                                                           stability_score_thresh=0.0), max_candidates=4)
    r = ground(tiny_segmenter, embedder, image, "the person on the left", settings=settings)
    assert 1 <= len(r) <= 4
    assert r.mask.shape == image.shape[:2] and r.mask.dtype == bool and r.mask.any()
    assert r.masks.shape == (len(r),) + image.shape[:2]
    # impossible thresholds: nothing survives, with a message that says what to do
    strict = settings.with_(automask=AutoMaskSettings(points_per_side=2, pred_iou_thresh=1.0))
    with pytest.raises(NoCandidatesError, match="pred_iou_thresh"):
        ground(tiny_segmenter, embedder, image, "the person on the left", settings=strict)
