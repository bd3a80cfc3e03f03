"""core.annotate.objects: the object list's edits, records and bounds."""
import time

import numpy as np
import pytest

from core.annotate.objects import ObjectList, colour_of
from core.io.labels import LabelledImage, LabelledObject


def _rect(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_add_area_box_colour_and_mask_round_trip():
    objects = ObjectList(40, 60)
    i = objects.add(_rect(40, 60, 5, 15, 10, 30), "dog")
    rec = objects.get(i)
    assert (rec.area, rec.box, rec.category) == (200, (10, 5, 30, 15), "dog")
    assert rec.colour == colour_of(i) and colour_of(1) != colour_of(2)
    assert np.array_equal(objects.mask(i), _rect(40, 60, 5, 15, 10, 30))
    assert 0 < objects.nbytes < 40 * 60  # compact: far below one byte per pixel


def test_bad_input_is_refused_clearly():
    objects = ObjectList(10, 10)
    with pytest.raises(ValueError, match="class name cannot be empty"):
        objects.add(_rect(10, 10, 0, 2, 0, 2), "  ")
    with pytest.raises(ValueError, match="empty"):
        objects.add(np.zeros((10, 10), bool), "dog")
    with pytest.raises(ValueError, match="does not fit"):
        objects.add(np.ones((5, 10), bool), "dog")
    i = objects.add(_rect(10, 10, 0, 2, 0, 2), "dog")
    with pytest.raises(ValueError, match="class name cannot be empty"):
        objects.rename(i, "")
    assert objects.get(i).category == "dog"
    with pytest.raises(KeyError, match="no object 99"):
        objects.delete([i, 99])
    assert i in objects  # nothing changed


def test_rename_relabel_hide_delete_merge():
    objects = ObjectList(20, 20)
    a = objects.add(_rect(20, 20, 0, 5, 0, 5), "cat")
    b = objects.add(_rect(20, 20, 10, 15, 10, 15), "cat")
    c = objects.add(_rect(20, 20, 0, 5, 10, 20), "dog")
    objects.relabel([a, b], "tiger")
    assert [objects.get(i).category for i in (a, b, c)] == ["tiger", "tiger", "dog"]
    objects.set_hidden([c], True)
    assert objects.get(c).hidden and objects.to_labelled().objects[2].hidden
    merged = objects.merge([a, c])
    assert merged == a and c not in objects and objects.area(a) == 25 + 50
    assert objects.get(a).category == "tiger"
    assert objects.merge([a, b], "animal") == a and objects.get(a).category == "animal" and len(objects) == 1
    with pytest.raises(ValueError, match="at least two"):
        objects.merge([a])
    objects.delete(a)
    assert len(objects) == 0


def test_labelled_image_round_trip_and_snapshot():
    image = LabelledImage("x.jpg", 12, 16, [LabelledObject(_rect(12, 16, 0, 4, 0, 4), "a"),
                                            LabelledObject(_rect(12, 16, 5, 9, 5, 16), "b", hidden=True)])
    objects = ObjectList.from_labelled(image)
    back = objects.to_labelled()
    assert back.file_name == "x.jpg" and [o.category for o in back.objects] == ["a", "b"]
    assert all(np.array_equal(x.mask, y.mask) for x, y in zip(image.objects, back.objects))
    snap = objects.snapshot()
    objects.delete(objects.ids()[0])
    objects.restore(snap)
    assert [o.category for o in objects] == ["a", "b"]


def test_a_thousand_objects_stay_responsive():
    """1,000 objects on a 480x640 image: adding, relabelling, listing and exporting to records
    stays well under a generous bound (not a benchmark; a busy CI machine passes it)."""
    rng = np.random.default_rng(0)
    objects = ObjectList(480, 640)
    start = time.perf_counter()
    for k in range(1000):
        y, x = rng.integers(0, 460), rng.integers(0, 620)
        objects.add(_rect(480, 640, y, y + 20, x, x + 20), f"c{k % 10}")
    objects.relabel(objects.ids()[::2], "even")
    rows = objects.summary()
    objects.merge(objects.ids()[:50])
    snap = objects.snapshot()
    elapsed = time.perf_counter() - start
    assert len(rows) == 1000 and len(objects) == 951 and len(snap[0]) == 951
    assert elapsed < 5.0, f"1,000 objects took {elapsed:.2f} s"
    assert objects.nbytes < 1000 * 1000  # well under 1 MB (one decoded mask is 300 kB)
