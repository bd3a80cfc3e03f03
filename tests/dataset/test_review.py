"""core.dataset.review: proposals never overwrite a person's work; the queue puts doubt first and says why."""
from __future__ import annotations

import numpy as np

from core.dataset.review import doubts, merge_proposals, review_queue
from core.io.labels import LabelledObject


def _box(y0, y1, x0, x1, size=(40, 40)):
    mask = np.zeros(size, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _proposal(mask, category="dog", score=0.9, margin=0.8):
    return LabelledObject(mask, category, score=score, origin="proposal", reviewed=False, margin=margin)


def test_proposals_never_overwrite_user_or_reviewed_objects():
    mine = LabelledObject(_box(0, 10, 0, 10), "cat")
    accepted = LabelledObject(_box(20, 30, 20, 30), "dog", score=0.7, origin="proposal", reviewed=True)
    stale = _proposal(_box(0, 5, 30, 40))
    new = [_proposal(_box(0, 10, 0, 10), "dog"), _proposal(_box(20, 30, 20, 31)), _proposal(_box(10, 20, 10, 20))]
    merged = merge_proposals([mine, stale, accepted], new)
    assert merged[0] is mine and merged[1] is accepted and merged[0].category == "cat"
    assert len(merged) == 3 and merged[2] is new[2]       # repeats of kept objects dropped; stale one replaced


def test_queue_orders_by_doubt_and_names_the_reasons():
    objects = [_proposal(_box(0, 20, 0, 20), score=0.95, margin=0.9),                 # confident
               _proposal(_box(25, 35, 25, 35), score=0.3, margin=0.05),               # low and close
               _proposal(_box(0, 1, 39, 40)),                                          # tiny
               _proposal(_box(2, 10, 2, 10), score=0.9, margin=0.85),                 # inside the first
               LabelledObject(_box(30, 40, 0, 10), "cat")]                             # a person's: not queued
    queue = review_queue(doubts("a.png", objects))
    assert [d.index for d in queue][:2] == [1, 2] and 4 not in [d.index for d in queue]
    reasons = {d.index: d.reasons for d in queue}
    assert reasons[1] == ("low class probability 0.30", "close second class (margin 0.05)")
    assert reasons[2] == ("tiny (1 px)",)
    assert reasons[3] == ("100% inside another object",) and reasons[0] == ("no flag raised",)
    assert queue[-1].index == 0
