"""core.io.masks: RLE round-trips against pycocotools on real COCO masks, PNG, IoU."""
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from core.io.masks import (coco_ann_to_mask, coco_box_to_xyxy, intersection_and_union, mask_iou, mask_to_png,
                        mask_to_rle, png_to_mask, rle_to_mask)


def test_rle_round_trip_on_real_masks(coco_json):
    images = {im["id"]: im for im in coco_json["images"]}
    anns = [a for a in coco_json["annotations"]][:40]
    for ann in anns:
        im = images[ann["image_id"]]
        mask = coco_ann_to_mask(ann, im["height"], im["width"])
        assert mask.shape == (im["height"], im["width"]) and mask.any()
        rle = json.loads(json.dumps(mask_to_rle(mask)))  # survives JSON
        assert (rle_to_mask(rle) == mask).all()
        # pycocotools reads our RLE and agrees on the area
        coded = {"size": rle["size"], "counts": rle["counts"].encode()}
        assert int(mask_utils.area(coded)) == int(mask.sum())
        if not ann.get("iscrowd"):
            assert abs(int(mask.sum()) - ann["area"]) <= 0.05 * ann["area"] + 10


def test_matches_pycocotools_ann_to_mask_incl_crowd(coco_dir, coco_json):
    import contextlib
    import io

    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        api = COCO(str(coco_dir / "instances.json"))
    crowd = [a for a in coco_json["annotations"] if a.get("iscrowd")]
    assert crowd, "COCO128 has crowd (uncompressed RLE) annotations"
    for ann in crowd + coco_json["annotations"][:20]:
        im = api.imgs[ann["image_id"]]
        assert (coco_ann_to_mask(ann, im["height"], im["width"]) == api.annToMask(ann).astype(bool)).all()


def test_png_round_trip():
    mask = np.zeros((7, 9), bool)
    mask[2:5, 3:8] = True
    assert (png_to_mask(mask_to_png(mask)) == mask).all()


def test_iou_hand_computed():
    a = np.zeros((4, 4), bool); a[:2, :2] = True   # 4 px
    b = np.zeros((4, 4), bool); b[:2, 1:3] = True  # 4 px, 2 shared
    assert mask_iou(a, b) == pytest.approx(2 / 6)
    assert intersection_and_union(a, b) == (2, 6)
    assert mask_iou(np.zeros((2, 2)), np.zeros((2, 2))) == 0.0
    with pytest.raises(ValueError):
        mask_iou(a, np.zeros((3, 3), bool))


def test_bad_rle_and_box():
    with pytest.raises(ValueError):
        rle_to_mask({"counts": "x"})
    assert coco_box_to_xyxy([10, 20, 30, 40]).tolist() == [10, 20, 40, 60]


def test_box_to_mask_rounds_outwards_and_clips():
    from core.io.masks import box_to_mask

    mask = box_to_mask((1.5, 0.2, 3.0, 2.0), (4, 5))
    assert mask.sum() == 2 * 2 and mask[0, 1] and mask[1, 2] and not mask[2, 1]
    assert box_to_mask((-3, -3, 2, 9), (4, 5)).sum() == 4 * 2


def test_outer_edge_is_the_ring_just_outside_the_mask():
    from core.io.masks import outer_edge

    mask = np.zeros((7, 7), bool)
    mask[3, 3] = True
    one = outer_edge(mask)
    assert one.sum() == 4 and not (one & mask).any() and one[2, 3] and one[3, 4]
    two = outer_edge(mask, width=2)
    assert two.sum() == 12 and (two | ~one)[one].all()
