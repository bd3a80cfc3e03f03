"""core.io.formats: each format written, then read back with that format's usual reader
(pycocotools, supervision, PIL + json as labelme does) and with ours: same objects, mask IoU
>= 0.98 after polygon conversion (1.0 for RLE and PNG formats)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core.io.formats import export_set, parse_formats, read_set
from core.io.formats.polygons import join_parts, mask_to_polygons, polygons_to_mask
from core.io.labels import ExportMeta, LabelledImage, LabelledObject
from core.io.masks import mask_iou
from core.io.panoptic import rgb_to_ids

H, W = 48, 64
CATEGORIES = ["dog", "cat", "tree"]
META = ExportMeta(models="SAM vit_t + CLIP ViT-B-32/untrained", untrained=True)


def _shapes() -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[:H, :W]
    rect = np.zeros((H, W), bool)
    rect[4:14, 4:20] = True
    ellipse = ((xx - 44) / 14.0) ** 2 + ((yy - 12) / 8.0) ** 2 <= 1
    ell = np.zeros((H, W), bool)
    ell[24:44, 4:10] = True
    ell[38:44, 4:24] = True
    band = (np.abs(xx - yy - 10) <= 2) & (yy >= 26) & (xx >= 36)
    return {"rect": rect, "ellipse": ellipse, "L": ell, "diagonal": band}


def _set() -> list[LabelledImage]:
    s = _shapes()
    first = [LabelledObject(s["rect"], "dog"), LabelledObject(s["ellipse"], "cat", score=0.61, origin="proposal",
                                                                  reviewed=False),
             LabelledObject(s["L"], "tree", hidden=True)]
    second = [LabelledObject(s["diagonal"], "dog", score=0.9, origin="proposal", reviewed=True),
              LabelledObject(s["ellipse"], "dog")]
    return [LabelledImage("a.png", H, W, first), LabelledImage("sub/b.png", H, W, second)]


@pytest.fixture
def written(tmp_path):
    """The set exported in every format with its images (tiny PNGs) beside it."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    for name in ("a.png", "sub/b.png"):
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(root / name)
    out = tmp_path / "out"
    files = export_set(out, _set(), CATEGORIES, list(parse_formats("coco,coco-polygons,panoptic,semantic,voc,yolo,"
                                                                   "labelme")), meta=META, image_root=root)
    return out, files


def _assert_same(images, expected, threshold):
    assert [im.file_name for im in images] == [im.file_name for im in expected]
    for got, want in zip(images, expected):
        assert [o.category for o in got.objects] == [o.category for o in want.objects]
        for g, w in zip(got.objects, want.objects):
            assert mask_iou(g.mask, w.mask) >= threshold


def test_polygons_round_trip_both_conventions():
    for mask in _shapes().values():
        assert mask_iou(polygons_to_mask(mask_to_polygons(mask), H, W), mask) == 1.0
        assert mask_iou(polygons_to_mask(mask_to_polygons(mask, corners=False), H, W, corners=False), mask) == 1.0
    dot = np.zeros((H, W), bool)
    dot[5, 7] = True                                        # one pixel: a square around it
    assert mask_iou(polygons_to_mask(mask_to_polygons(dot), H, W), dot) == 1.0
    assert mask_to_polygons(np.zeros((H, W), bool)) == []


def test_two_parts_become_one_ring():
    s = _shapes()
    both = s["rect"] | s["diagonal"]
    ring = join_parts(mask_to_polygons(both, corners=False))
    back = polygons_to_mask([ring], H, W, corners=False)
    assert back[both].all() and mask_iou(back, both) > 0.9  # the zero-width bridge adds one line of pixels


def test_coco_rle_read_by_pycocotools(written):
    from pycocotools.coco import COCO

    out, _ = written
    coco = COCO(str(out / "instances.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == CATEGORIES
    expected = _set()
    for image_id, image in zip(sorted(coco.getImgIds()), expected):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert len(anns) == len(image.objects)
        for ann, obj in zip(anns, image.objects):
            assert mask_iou(coco.annToMask(ann).astype(bool), obj.mask) == 1.0
            assert coco.cats[ann["category_id"]]["name"] == obj.category
    doc = json.loads((out / "instances.json").read_text())
    assert doc["untrained"] is True and "untrained" in doc["models"]
    images, categories = read_set(out / "instances.json")
    _assert_same(images, expected, 1.0)
    assert categories == CATEGORIES
    restored = images[0].objects[1]
    assert (restored.score, restored.origin, restored.reviewed) == (0.61, "proposal", False)
    assert images[0].objects[2].hidden


def test_coco_polygons_read_by_pycocotools(written):
    from pycocotools.coco import COCO

    out, _ = written
    coco = COCO(str(out / "instances_polygons.json"))
    for image_id, image in zip(sorted(coco.getImgIds()), _set()):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert all(isinstance(a["segmentation"], list) for a in anns)
        for ann, obj in zip(anns, image.objects):
            assert mask_iou(coco.annToMask(ann).astype(bool), obj.mask) >= 0.98


def test_panoptic_read_with_pil_and_json(written):
    out, _ = written
    doc = json.loads((out / "panoptic.json").read_text())
    assert doc["untrained"] is True
    names = {c["id"]: c["name"] for c in doc["categories"]}
    for ann, image in zip(doc["annotations"], _set()):
        ids = rgb_to_ids(np.asarray(Image.open(out / "panoptic" / ann["file_name"]).convert("RGB")))
        assert len(ann["segments_info"]) == len(image.objects)
        for seg, obj in zip(ann["segments_info"], image.objects):
            assert names[seg["category_id"]] == obj.category
            assert mask_iou(ids == seg["id"], obj.mask) == 1.0 and seg["area"] == obj.mask.sum()
    _assert_same(read_set(out / "panoptic.json")[0], _set(), 1.0)


def test_semantic_and_voc_pngs_read_with_pil(written):
    out, _ = written
    legend = json.loads((out / "semantic.json").read_text())
    index = {e["name"]: e["id"] for e in legend["legend"]}
    for image, stem in zip(_set(), ("a", "sub__b")):
        for folder in (out / "semantic", out / "voc" / "SegmentationClass"):
            pil = Image.open(folder / f"{stem}.png")
            assert pil.mode == "P" and pil.getpalette()[3:6] == [128, 0, 0]   # VOC colour of class 1
            classes = np.asarray(pil)
            for name in CATEGORIES:
                want = np.any([o.mask for o in image.objects if o.category == name] or [np.zeros((H, W), bool)],
                              axis=0)
                assert np.array_equal(classes == index[name], want)
    voc = out / "voc"
    assert (voc / "ImageSets/Segmentation/train.txt").read_text().split() == ["a", "sub__b"]
    assert (voc / "JPEGImages/sub__b.png").is_file()
    assert (voc / "labelmap.txt").read_text().splitlines()[2] == "dog:128,0,0::"
    images, categories = read_set(voc)
    _assert_same(images, _set(), 1.0)
    assert categories == CATEGORIES


def test_yolo_read_by_supervision_and_ours(written):
    import supervision as sv

    out, _ = written
    root = out / "yolo"
    assert (root / "images/train/sub/b.png").is_file() and (root / "labels/train/sub/b.txt").is_file()
    data = (root / "data.yaml").read_text()
    assert "untrained: true" in data
    dataset = sv.DetectionDataset.from_yolo(str(root / "images/train"), str(root / "labels/train"),
                                            str(root / "data.yaml"))
    assert dataset.classes == CATEGORIES
    first = _set()[0]
    _, _, detections = next(item for item in dataset if item[0].endswith("a.png"))
    assert [dataset.classes[c] for c in detections.class_id] == [o.category for o in first.objects]
    for mask, obj in zip(detections.mask, first.objects):
        assert mask_iou(mask, obj.mask) >= 0.98
    images, categories = read_set(root)
    _assert_same(sorted(images, key=lambda im: im.file_name), _set(), 0.98)
    assert categories == CATEGORIES


def test_labelme_read_like_labelme(written):
    out, _ = written
    doc = json.loads((out / "labelme" / "a.json").read_text())
    assert doc["imagePath"] == "a.png" and (out / "labelme" / "a.png").is_file() and doc["untrained"] is True
    for shape, obj in zip(doc["shapes"], _set()[0].objects):
        pil = Image.new("L", (W, H), 0)                     # labelme's shape_to_mask: PIL polygon, outline too
        ImageDraw.Draw(pil).polygon([tuple(p) for p in shape["points"]], outline=1, fill=1)
        assert shape["label"] == obj.category and mask_iou(np.asarray(pil) > 0, obj.mask) >= 0.98
    images, _ = read_set(out / "labelme")
    _assert_same(images, [_set()[0], LabelledImage("sub__b.png", H, W, _set()[1].objects)], 0.98)
    assert images[0].objects[1].origin == "proposal" and images[0].objects[1].reviewed is False


def test_reviewed_only_and_unknown_format(tmp_path):
    files = export_set(tmp_path, _set(), CATEGORIES, "coco", reviewed_only=True)
    doc = json.loads(files["coco"][0].read_text())
    assert len(doc["annotations"]) == 4 and all(a["reviewed"] for a in doc["annotations"])
    with pytest.raises(ValueError, match="unknown export format"):
        parse_formats("coco,tiff")


def test_voc_refuses_too_many_classes(tmp_path):
    names = [f"c{i}" for i in range(300)]
    with pytest.raises(ValueError, match="at most 254 classes"):
        export_set(tmp_path, _set(), names, "voc")


def test_overlaps_later_object_on_top(tmp_path):
    s = _shapes()
    big = s["rect"].copy()
    big[4:20, 4:30] = True
    image = LabelledImage("o.png", H, W, [LabelledObject(s["rect"], "dog"), LabelledObject(big, "cat")])
    export_set(tmp_path, [image], CATEGORIES, "semantic,panoptic")
    classes = np.asarray(Image.open(tmp_path / "semantic" / "o.png"))
    assert (classes[big] == 2).all()                        # the later "cat" covers the earlier "dog"
    doc = json.loads((tmp_path / "panoptic.json").read_text())
    assert [s["category_id"] for s in doc["annotations"][0]["segments_info"]] == [2]   # "dog" left no pixels
