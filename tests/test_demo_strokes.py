"""Brush and eraser strokes through the Segment callbacks: the server's selection (and so
every panel and download) is the SAM mask with the canvas's strokes re-applied in order."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.annotate.strokes import apply_strokes, parse_strokes
from core.io.masks import png_to_mask
from demo import maskdata
from demo.state import Selection, UserError
from tests.test_demo_callbacks import cb, ctx, loaded, small_examples  # noqa: F401  (fixtures)


def commit(cb, session, points=(), strokes=None, shown="prompt", chosen=0):  # noqa: F811
    return cb.segment.commit_prompts(session, {"key": session.image_key, "points": [list(p) for p in points],
                                               "box": None, "chosen": chosen, "strokes": strokes,
                                               "version": session.prompt_version + 1, "shown": shown})


PAINT = {"mode": "paint", "radius": 4, "points": [[2, 2], [40, 2]]}
ERASE = {"mode": "erase", "radius": 3, "points": [[20, 2]]}


def test_a_brush_with_no_selection_starts_a_new_mask_and_the_eraser_cuts_it(cb):
    session = loaded(cb)
    out = commit(cb, session, strokes=[PAINT], shown="none")
    mask = session.selected_mask()
    assert mask.shape == session.image.shape[:2] and mask[2, 2:40].all() and "stroke" in out.status
    commit(cb, session, strokes=[PAINT, ERASE], shown="none")
    edited = session.selected_mask()
    assert not edited[2, 20] and edited[2, 5] and edited.sum() < mask.sum()
    # undo on the canvas = the shorter list: the server follows
    commit(cb, session, strokes=[PAINT], shown="none")
    assert np.array_equal(session.selected_mask(), mask)


def test_prompting_again_reapplies_the_strokes_on_the_new_sam_mask_and_says_so(cb):
    session = loaded(cb)
    h, w = session.image.shape[:2]
    commit(cb, session, [(w / 2, h / 2, 1)])
    sam = session.candidates.masks[0]
    out = commit(cb, session, [(w / 2, h / 2, 1)], strokes=[PAINT, ERASE])
    want = apply_strokes(sam, parse_strokes([PAINT, ERASE], sam.shape), sam.shape)
    assert np.array_equal(session.selected_mask(), want) and "re-applied" in out.status
    echo = json.loads(out.canvas)["selection"]          # the canvas is sent the server's pixels
    assert echo["source"] == "edited" and echo["version"] == session.prompt_version
    # the mask PNG download is the edited mask (at the original size)
    ex = cb.segment.exports(session)
    png = png_to_mask(open(ex.mask_png, "rb").read())
    assert np.array_equal(png, maskdata.to_size(want, session.original_size))


def test_strokes_on_a_selection_made_elsewhere_reapply_to_its_unedited_mask(cb):
    session = loaded(cb)
    h, w = session.image.shape[:2]
    base = np.zeros((h, w), bool)
    base[10:30, 10:30] = True
    session.selection = Selection("refer", base, score=0.5)
    commit(cb, session, strokes=[{"mode": "erase", "radius": 3, "points": [[20, 20]]}], shown="external")
    assert not session.selected_mask()[20, 20] and session.selection.source == "refer"
    commit(cb, session, strokes=[], shown="external")
    commit(cb, session, strokes=[PAINT], shown="external")   # a different list: from the base again
    assert session.selected_mask()[20, 20] and session.selected_mask()[2, 2]


@pytest.mark.parametrize("bad", [[{"mode": "paint"}], "nope", [PAINT] * 2001])
def test_bad_strokes_get_a_message(cb, bad):
    session = loaded(cb)
    with pytest.raises(UserError):
        commit(cb, session, strokes=bad, shown="none")
