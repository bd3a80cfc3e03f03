"""The Objects panel's callbacks: keep (with the canvas's edited selection), rename,
relabel, merge, hide, delete, undo/redo, export -> load, bad input, bounded memory."""
from __future__ import annotations

import numpy as np
import pytest

from demo.panels.annotate import MAX_OBJECTS, parse_classes
from demo.state import Selection, UserError
from tests.test_demo_callbacks import cb, ctx, loaded, small_examples  # noqa: F401  (fixtures)


def select(session, y0, y1, x0=5, x1=40):
    mask = np.zeros(session.image.shape[:2], bool)
    mask[y0:y1, x0:x1] = True
    session.selection = Selection("prompt", mask, 0, 0.9, 1)
    return mask


def test_keep_rename_relabel_merge_hide_delete_with_undo_and_redo(cb):
    session = loaded(cb)
    an = cb.annotate
    select(session, 5, 15)
    assert "Kept object 1 as 'dog'" in an.keep(session, "dog")
    select(session, 20, 30)
    an.keep(session, "cat")
    rows = an.rows(session)
    assert [r[2] for r in rows] == ["dog", "cat"] and rows[0][3] == 350 and rows[0][1].startswith("#")
    an.rename(session, "2", "kitten")
    assert an.rows(session)[1][2] == "kitten"
    an.rename(session, "1, 2", "animal")
    assert {r[2] for r in an.rows(session)} == {"animal"}
    an.hide(session, "2")
    assert an.rows(session)[1][4] == "hidden"
    an.merge(session, "1 2")
    assert len(an.rows(session)) == 1 and an.rows(session)[0][3] == 700
    an.undo(session)
    assert len(an.rows(session)) == 2
    an.redo(session)
    assert len(an.rows(session)) == 1
    an.delete(session, "1")
    assert an.rows(session) == []
    an.undo(session)
    an.undo(session)
    assert len(an.rows(session)) == 2
    select(session, 40, 50)
    an.keep(session, "bird")                   # a new edit after undo drops the redo branch
    assert "Nothing to redo" in an.redo(session)
    assert "<table" in an.table_html(session) and "bird" in an.table_html(session)


def test_bad_input_gets_a_message(cb):
    session = loaded(cb)
    an = cb.annotate
    with pytest.raises(UserError, match="No object selected"):
        an.keep(session, "dog")
    select(session, 5, 15)
    with pytest.raises(UserError, match="empty class"):
        an.keep(session, "  ")
    an.keep(session, "dog")
    with pytest.raises(UserError, match="No object 7"):
        an.delete(session, "7")
    with pytest.raises(UserError, match="ids"):
        an.merge(session, "")
    with pytest.raises(UserError):
        an.rename(session, "1", "")
    with pytest.raises(UserError):
        parse_classes("\n".join(f"c{i}" for i in range(600)))


def test_a_new_image_starts_a_new_list(cb):
    session = loaded(cb, 0)
    select(session, 5, 15)
    cb.annotate.keep(session, "dog")
    cb.segment.load_example(session, 1)
    assert cb.annotate.rows(session) == []


@pytest.mark.parametrize("fmt", ["coco", "panoptic", "labelme", "yolo"])
def test_export_then_load_restores_the_list(cb, fmt):
    session = loaded(cb)
    an = cb.annotate
    a = select(session, 5, 15)
    an.keep(session, "dog")
    b = select(session, 20, 30, 50, 80)
    an.keep(session, "cat")
    path = an.export(session, fmt)
    an.delete(session, "1, 2")
    assert an.rows(session) == []
    assert "Loaded 2 object(s)" in an.load(session, path)
    held = session.annotations.objects
    got = {held.get(i).category: held.mask(i) for i in held.ids()}
    assert set(got) == {"dog", "cat"}
    for want, name in ((a, "dog"), (b, "cat")):
        iou = (got[name] & want).sum() / (got[name] | want).sum()
        assert iou > 0.95, (fmt, name, iou)


def test_a_semantic_png_exports_but_does_not_load_back_with_a_message(cb):
    session = loaded(cb)
    select(session, 5, 15)
    cb.annotate.keep(session, "dog")
    path = cb.annotate.export(session, "semantic")
    assert path.endswith(".zip")
    with pytest.raises(UserError, match="could not be read"):   # one class per pixel: no instances
        cb.annotate.load(session, path)


def test_the_list_is_bounded(cb, monkeypatch):
    import demo.panels.annotate as annotate
    monkeypatch.setattr(annotate, "MAX_OBJECTS", 3)
    session = loaded(cb)
    select(session, 5, 15)
    for _ in range(3):
        cb.annotate.keep(session, "dog")
    with pytest.raises(UserError, match="3 objects"):
        cb.annotate.keep(session, "dog")
    assert session.annotations.nbytes < 100_000 and MAX_OBJECTS >= 1000
