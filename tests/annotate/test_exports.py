"""core.annotate.exports: per-image exports through core.io.formats, loaded back (IoU per object)."""
import json

import numpy as np
import pytest

from core.annotate.exports import export_objects, load_objects
from core.annotate.objects import ObjectList
from core.io.masks import mask_iou

H, W = 48, 64


def _objects():
    objects = ObjectList(H, W, "pics/street.jpg")
    yy, xx = np.mgrid[:H, :W]
    objects.add((yy - 20) ** 2 + (xx - 18) ** 2 < 100, "dog")                    # a disc
    m = np.zeros((H, W), bool)
    m[5:40, 35:60] = True
    objects.add(m, "car")
    m = np.zeros((H, W), bool)
    m[30:45, 5:30] = True
    objects.add(m, "dog")                                                          # overlaps the disc
    return objects


def _visible(objects):
    owner = np.zeros((H, W), int)
    for o in objects:
        owner[o.mask()] = o.id
    return [owner == o.id for o in objects]


@pytest.fixture()
def exported(tmp_path):
    objects = _objects()
    image = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    written = export_objects(objects, tmp_path, classes=["car", "dog", "cat"], image=image)
    return objects, written, tmp_path


def _ious(a, b_masks):
    return [mask_iou(x, y) for x, y in zip(b_masks, [o.mask() for o in a])]


def test_coco_instances_round_trip_is_exact(exported):
    objects, _, out = exported
    back = load_objects(out / "instances.json", H, W, "pics/street.jpg")
    assert [o.category for o in back] == ["dog", "car", "dog"]
    assert _ious(back, [o.mask() for o in objects]) == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("where", ["labelme", "yolo_txt", "yolo_dir"])
def test_polygon_formats_round_trip(exported, where):
    objects, written, out = exported
    path = {"labelme": next(p for p in written["labelme"] if p.suffix == ".json"),
            "yolo_txt": next(p for p in written["yolo"] if p.suffix == ".txt"),
            "yolo_dir": out / "yolo"}[where]
    back = load_objects(path, H, W, "pics/street.jpg")
    assert [o.category for o in back] == ["dog", "car", "dog"]
    ious = _ious(back, [o.mask() for o in objects])
    assert min(ious) > 0.9, ious


def test_panoptic_gives_the_visible_parts(exported):
    objects, _, out = exported
    back = load_objects(out / "panoptic.json", H, W)
    assert [o.category for o in back] == ["dog", "car", "dog"]
    assert _ious(back, _visible(objects)) == [1.0, 1.0, 1.0]


def test_semantic_png_gives_one_object_per_class(exported):
    objects, written, out = exported
    png = next(p for p in written["semantic"] if p.suffix == ".png")
    for path, kw in ((png, {}), (out / "semantic.json", {"file_name": "pics/street.jpg"})):
        back = load_objects(path, H, W, **kw)
        assert sorted(o.category for o in back) == ["car", "dog"]
        vis = _visible(objects)
        by_class = {"dog": vis[0] | vis[2], "car": vis[1]}
        assert all(mask_iou(o.mask(), by_class[o.category]) == 1.0 for o in back)


def test_bad_files_are_refused_clearly(exported, tmp_path):
    _, written, out = exported
    with pytest.raises(ValueError, match="labels a 48x64 image; this one is 50x64"):
        load_objects(out / "instances.json", 50, W)
    with pytest.raises(FileNotFoundError):
        load_objects(out / "missing.json", H, W)
    with pytest.raises(ValueError, match="not a COCO"):
        load_objects(next(p for p in written["yolo"] if p.suffix == ".yaml"), H, W)
    lone = tmp_path / "lone.txt"
    lone.write_text("0 0.1 0.1 0.5 0.1 0.5 0.5\n")
    with pytest.raises(ValueError, match="give the class list"):
        load_objects(lone, H, W)
    assert [o.category for o in load_objects(lone, H, W, classes=["kite"])] == ["kite"]
    evil = out / "evil.json"
    evil.write_text(json.dumps({"legend": [{"id": 1, "name": "x"}], "images": {"a.jpg": "../../etc/passwd"}}))
    with pytest.raises(ValueError, match="outside its folder"):
        load_objects(evil, H, W)


def test_round_trip_on_a_coco128_image(coco_image, tmp_path):
    """A real image's ground-truth objects: exact for COCO and panoptic (visible parts); the
    polygon formats lose little (mean IoU per object > 0.9)."""
    from core.io.masks import coco_ann_to_mask

    image, info, anns = coco_image
    h, w = image.shape[:2]
    objects = ObjectList(h, w, info["file_name"])
    for a in anns:
        m = coco_ann_to_mask(a, h, w)
        if m.any():
            objects.add(m, str(a["category_id"]))
    written = export_objects(objects, tmp_path, image=image)
    truth = [o.mask() for o in objects]
    assert _ious(load_objects(tmp_path / "instances.json", h, w), truth) == [1.0] * len(objects)
    assert min(_ious(load_objects(tmp_path / "panoptic.json", h, w), _visible_of(objects, h, w))) == 1.0
    for path in (tmp_path / "yolo", next(p for p in written["labelme"] if p.suffix == ".json")):
        ious = _ious(load_objects(path, h, w), truth)
        assert len(ious) == len(objects) and np.mean(ious) > 0.9, (path, ious)


def _visible_of(objects, h, w):
    owner = np.zeros((h, w), int)
    for o in objects:
        owner[o.mask()] = o.id
    return [owner == o.id for o in objects]
