"""core.annotate.history: undo / redo over object lists and selections."""
import numpy as np
import pytest

from core.annotate.history import EditState, History, Selection
from core.annotate.objects import ObjectList
from core.annotate.strokes import Stroke


def _rect(y0, y1, x0, x1, shape=(20, 20)):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_every_kind_of_edit_undoes_and_redoes():
    objects = ObjectList(20, 20)
    history = History(EditState.of(objects))
    sel = Selection(points=((5.0, 5.0),), labels=(1,))
    history.record("points", EditState.of(objects, sel))
    sel = Selection.from_mask(_rect(0, 10, 0, 10), points=sel.points, labels=sel.labels, candidate=1)
    history.record("candidate", EditState.of(objects, sel))
    sel = sel.with_stroke(Stroke("paint", 1.0, ((15.0, 15.0),)))
    history.record("stroke", EditState.of(objects, sel))
    assert sel.mask((20, 20))[15, 15]
    i = objects.add(sel.mask((20, 20)), "dog")
    history.record("keep", EditState.of(objects, Selection()))
    objects.rename(i, "cat")
    history.record("rename", EditState.of(objects))
    objects.delete(i)
    history.record("delete", EditState.of(objects))
    assert history.undo_action == "delete"

    history.undo().restore_into(objects)
    assert objects.get(i).category == "cat"
    history.undo().restore_into(objects)
    assert objects.get(i).category == "dog"
    history.undo().restore_into(objects)
    assert len(objects) == 0
    shown = history.undo().restore_into(objects)
    assert shown.strokes == () and shown.candidate == 1
    assert history.redo_action == "stroke"
    shown = history.redo().restore_into(objects)
    assert len(shown.strokes) == 1
    assert history.redo().restore_into(objects) == Selection() and objects.get(i).category == "dog"


def test_a_new_edit_after_undo_drops_the_redo_branch():
    objects = ObjectList(20, 20)
    history = History(EditState.of(objects))
    objects.add(_rect(0, 5, 0, 5), "a")
    history.record("keep", EditState.of(objects))
    history.undo().restore_into(objects)
    assert history.can_redo
    history.record("points", EditState.of(objects, Selection(points=((1.0, 1.0),), labels=(1,))))
    assert not history.can_redo and history.redo() is None and len(history) == 2
    assert history.undo() is not None and history.undo() is None


def test_bounded_by_count_and_bytes():
    objects = ObjectList(200, 200)
    history = History(EditState.of(objects), max_steps=5)
    for k in range(12):
        objects.add(_rect(k, k + 3, 0, 150, (200, 200)), "x")
        history.record("keep", EditState.of(objects))
    assert len(history) == 5 and history.undo_action == "keep"
    for _ in range(4):
        history.undo()
    assert not history.can_undo and len(history.current.objects[0]) == 8

    rng = np.random.default_rng(0)
    objects = ObjectList(200, 200)
    history = History(EditState.of(objects), max_bytes=60_000)
    for k in range(40):
        objects.add(rng.random((200, 200)) > 0.5, "noise")     # ~ big RLEs
        history.record("keep", EditState.of(objects))
    assert history.nbytes <= 60_000 or len(history) == 1
    assert len(history) < 40 and history.current.objects[0][-1].category == "noise"


def test_shared_masks_are_counted_once():
    objects = ObjectList(100, 100)
    for k in range(20):
        objects.add(_rect(k, k + 2, 0, 90, (100, 100)), "a")
    history = History(EditState.of(objects))
    base = history.nbytes
    objects.rename(objects.ids()[0], "b")
    history.record("rename", EditState.of(objects))
    assert history.nbytes - base < base / 5


def test_unknown_action_is_refused():
    with pytest.raises(ValueError, match="unknown edit"):
        History(EditState.of(ObjectList(5, 5))).record("paint", None)
