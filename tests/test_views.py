"""core.views: exact checks on real COCO ground-truth masks."""
import numpy as np
import pytest

from core.io.masks import coco_ann_to_mask
from core.views import VIEW_NAMES, expand_box, mask_to_box, render_view, render_views


@pytest.fixture(scope="module")
def object_in_image(coco_image):
    image, info, anns = coco_image
    ann = max(anns, key=lambda a: a["area"])
    return image, coco_ann_to_mask(ann, info["height"], info["width"]), ann


def test_box_matches_coco_bbox(object_in_image):
    image, mask, ann = object_in_image
    x, y, w, h = ann["bbox"]
    box = mask_to_box(mask)
    assert np.allclose(box, [x, y, x + w, y + h], atol=2.0)


def test_mask_view_keeps_object_blacks_background(object_in_image):
    image, mask, _ = object_in_image
    out = render_view("mask", image, mask)
    assert out.shape == image.shape
    assert (out[mask] == image[mask]).all()
    assert (out[~mask] == 0).all()


def test_crop_view_is_the_bounding_box(object_in_image):
    image, mask, _ = object_in_image
    x0, y0, x1, y1 = mask_to_box(mask).astype(int)
    assert (render_view("crop", image, mask) == image[y0:y1, x0:x1]).all()
    mc = render_view("mask_crop", image, mask)
    assert mc.shape == (y1 - y0, x1 - x0, 3)
    assert (mc[~mask[y0:y1, x0:x1]] == 0).all()


def test_context_dim_blur_share_the_grown_box(object_in_image):
    image, mask, _ = object_in_image
    views = render_views(image, mask)
    box = expand_box(mask_to_box(mask), 0.2, image.shape[:2])
    x0, y0, x1, y1 = int(box[0]), int(box[1]), int(np.ceil(box[2])), int(np.ceil(box[3]))
    assert views["context"].shape == views["dim"].shape == views["blur"].shape == (y1 - y0, x1 - x0, 3)
    inner = mask[y0:y1, x0:x1]
    assert (views["dim"][inner] == image[y0:y1, x0:x1][inner]).all()
    assert views["dim"][~inner].mean() < 0.5 * image[y0:y1, x0:x1][~inner].mean()
    assert (views["blur"][inner] == image[y0:y1, x0:x1][inner]).all()
    assert set(views) == set(VIEW_NAMES)


def test_errors():
    image = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError, match="choose one of"):
        render_view("sketch", image, np.ones((10, 10), bool))
    with pytest.raises(ValueError, match="empty"):
        render_view("crop", image, np.zeros((10, 10), bool))
    with pytest.raises(ValueError, match="does not match"):
        render_view("crop", image, np.ones((5, 5), bool))


def test_one_masks_to_boxes_for_sam_and_refer():
    """One batch box function (core.views.masks_to_boxes), used by the automatic masks and by
    Refer's candidates; it agrees with mask_to_box, and an empty mask gets [0, 0, 0, 0]
    (mask_to_box, for one mask, raises) so a batch keeps its length and order."""
    from core import views
    from core.refer import ground
    from core.sam import automask

    assert automask.masks_to_boxes is views.masks_to_boxes
    assert not hasattr(ground, "masks_to_boxes")
    rng = np.random.default_rng(0)
    masks = rng.random((5, 17, 23)) > 0.97
    masks[2] = False
    boxes = views.masks_to_boxes(masks)
    assert boxes.dtype == np.float32 and boxes.shape == (5, 4)
    for mask, box in zip(masks, boxes):
        expected = mask_to_box(mask) if mask.any() else np.zeros(4, np.float32)
        assert np.array_equal(box, expected)
    assert views.masks_to_boxes(np.zeros((0, 4, 4), bool)).shape == (0, 4)


def test_one_wording_of_the_box_convention():
    """Docstrings and docs name the exclusive corner one way: XYXY (x0, y0, x1, y1), x1/y1
    exclusive (one said "x2/y2 exclusive" for the same corner)."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    files = [*repo.glob("core/**/*.py"), *repo.glob("demo/**/*.py"), repo / "README.md", *repo.glob("docs/*.md")]
    lines = [(f, line) for f in files for line in f.read_text().splitlines()]
    assert not [(f.name, line) for f, line in lines if re.search(r"x2/y2 exclusive|x2, y2 exclusive", line)]
    mentions = [(f, line) for f, line in lines if re.search(r"x1/y1 exclusive|x1, y1 exclusive", line)]
    assert mentions and all("x1/y1 exclusive" in line for _, line in mentions)
    assert "XYXY (x0, y0, x1, y1)" in (repo / "core" / "views.py").read_text()
