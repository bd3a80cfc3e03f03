import numpy as np
import pytest

from core.annotate.strokes import apply_strokes, parse_stroke, parse_strokes


def test_paint_then_erase_a_polyline_at_pixel_centres():
    base = np.zeros((20, 30), bool)
    paint = parse_stroke({"mode": "paint", "radius": 2, "points": [[5, 10], [25, 10]]})
    out = apply_strokes(base, [paint])
    assert out[10, 5:25].all() and out[8, 10] and not out[7, 10]   # centre 8.5 within 2 of y=10? |8.5-10|=1.5
    erase = parse_stroke({"mode": "erase", "radius": 3, "points": [[15, 10]]})
    out2 = apply_strokes(base, [paint, erase])
    assert not out2[10, 14] and out2[10, 5] and not base.any()


def test_strokes_outside_the_image_are_clipped():
    out = apply_strokes(np.zeros((10, 10), bool),
                        [parse_stroke({"mode": "paint", "radius": 3, "points": [[-5, -5], [2, 2], [40, 2]]})])
    assert out.shape == (10, 10) and out[0, 0] and out[2, 9]


@pytest.mark.parametrize("bad", [None, {"mode": "x", "radius": 1, "points": [[0, 0]]},
                                 {"mode": "paint", "radius": 0, "points": [[0, 0]]},
                                 {"mode": "paint", "radius": 2, "points": []},
                                 {"mode": "paint", "radius": 2, "points": [[0, float("nan")]]}])
def test_bad_strokes_are_refused_with_a_message(bad):
    with pytest.raises(ValueError):
        parse_strokes([bad])
