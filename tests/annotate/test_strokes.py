"""core.annotate.strokes: parsing the browser's stroke records and rasterising them."""
import numpy as np
import pytest

from core.annotate.strokes import Stroke, apply_stroke, apply_strokes, edited_mask, parse_stroke, parse_strokes, rasterise


def test_a_round_stroke_covers_its_polyline_within_the_radius():
    s = parse_stroke({"mode": "paint", "radius": 3, "points": [[10, 10], [30, 10], [30, 25]]}, (40, 50))
    m = rasterise(s, (40, 50))
    assert m[10, 10:31].all() and m[10:26, 30].all()          # along the polyline
    assert m[7, 20] and m[13, 20] and not m[5, 20] and not m[15, 20]  # width ~ 2 * radius
    assert m[10, 7] and not m[10, 5]                          # round cap beyond the end
    assert not m[0, 0] and not m[39, 49]


def test_one_point_is_a_dot_and_outside_points_are_clipped():
    dot = rasterise(Stroke("paint", 2.0, ((5.0, 5.0),)), (20, 20))
    assert dot[5, 5] and dot[5, 7] and not dot[5, 9] and 9 <= dot.sum() <= 25
    edge = parse_stroke({"mode": "paint", "radius": 2, "points": [[-50, 10], [1e9, 10]]}, (20, 20))
    assert edge.points[1] == (40.0, 10.0)                     # clamped one image size out
    m = rasterise(edge, (20, 20))
    assert m.shape == (20, 20) and m[10].all() and not m[0].any()


def test_paint_then_erase_and_no_mask_starts_one():
    shape = (30, 30)
    painted = apply_stroke(None, parse_stroke({"mode": "paint", "radius": 4, "points": [[5, 15], [25, 15]]}, shape), shape)
    assert painted[15, 5:26].all()
    erased = apply_stroke(painted, parse_stroke({"mode": "erase", "radius": 2, "points": [[15, 0], [15, 29]]}, shape), shape)
    assert not erased[15, 15] and erased[15, 5] and painted[15, 15]  # the input is not changed
    assert not apply_stroke(None, Stroke("erase", 3.0, ((1.0, 1.0),)), shape).any()
    assert apply_strokes(None, [], shape) is None


def test_prompting_again_reapplies_strokes_on_the_new_sam_mask():
    shape = (20, 20)
    strokes = parse_strokes([{"mode": "paint", "radius": 1, "points": [[2, 2], [2, 8]]},
                             {"mode": "erase", "radius": 1, "points": [[15, 15]]}], shape)
    new_sam = np.zeros(shape, bool)
    new_sam[12:18, 12:18] = True
    out = edited_mask(new_sam, strokes, shape)
    assert out[5, 2] and not out[15, 15] and out[13, 13]


@pytest.mark.parametrize("record, message", [
    ("paint", "must be an object"),
    ({"mode": "draw", "radius": 2, "points": [[1, 1]]}, "mode"),
    ({"mode": "paint", "radius": 0, "points": [[1, 1]]}, "radius"),
    ({"mode": "paint", "radius": 1e6, "points": [[1, 1]]}, "radius"),
    ({"mode": "paint", "radius": True, "points": [[1, 1]]}, "radius"),
    ({"mode": "paint", "radius": 2, "points": []}, "at least one point"),
    ({"mode": "paint", "radius": 2, "points": [[1, "a"]]}, "point x|point y"),
    ({"mode": "paint", "radius": 2, "points": [[1, float("nan")]]}, "finite"),
    ({"mode": "paint", "radius": 2, "points": [[1, 2, 3]]}, r"\[x, y\]"),
])
def test_bad_records_are_refused_with_a_message(record, message):
    with pytest.raises(ValueError, match=message):
        parse_stroke(record, (10, 10))


def test_record_round_trip():
    s = parse_stroke({"mode": "erase", "radius": 2.5, "points": [[1, 2], [3, 4]]}, (10, 10))
    assert parse_stroke(s.to_record(), (10, 10)) == s
