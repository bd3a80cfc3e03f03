"""core.sam.automask against segment_anything's SamAutomaticMaskGenerator, edge cases.

A model-free SAM double whose decoder draws known logits (discs, a blob, 1-pixel lines) on the
low-res 256 x 256 grid runs through both pipelines (stock: single crop, same embedding); the
masks must be the same set, with the same scores. Fast: no transformer runs.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from core.sam import automask
from core.sam.automask import AutoMaskSettings

CENTRES = (torch.arange(256, dtype=torch.float32) + 0.5) * 4   # low-res cell centres, input frame


def discs(coords, radii=(40.0, 80.0, 400.0)):
    """Three discs around each prompt (the largest touches the image border)."""
    dist = torch.sqrt((CENTRES[None, None, :] - coords[:, 0, None, None]) ** 2
                      + (CENTRES[None, :, None] - coords[:, 1, None, None]) ** 2)
    return torch.stack([r - dist for r in radii], dim=1)


def blob(coords):
    """The same image-wide blob for every prompt: box NMS keeps one mask."""
    base = 200.0 - torch.abs(CENTRES[None, :, None] - 300) - torch.abs(CENTRES[None, None, :] - 300)
    return base.expand(len(coords), 3, 256, 256).clone()


def lines(coords):
    """Vertical lines through each prompt's column, about 1 original pixel wide (+1 on the line's
    low-res column, -3 beside it), full height; three slots of different heights."""
    col = torch.clamp((coords[:, 0] / 4).long(), 0, 255)
    on = torch.arange(256)[None, :] == col[:, None]                       # (B, 256) columns
    row = torch.where(on, torch.tensor(1.0), torch.tensor(-3.0))[:, None, :].expand(-1, 256, -1)
    cut = [torch.arange(256)[None, :, None] < k for k in (256, 128, 64)]
    return torch.stack([torch.where(c, row, torch.tensor(-3.0)) for c in cut], dim=1)


class FakeSam:
    """Enough of segment_anything's Sam for both pipelines: the decoder calls `draw(coords)`."""

    mask_threshold = 0.0
    device = torch.device("cpu")

    def __init__(self, draw):
        self.draw = draw
        self.image_encoder = SimpleNamespace(img_size=1024)
        self.prompt_encoder = _Prompts()

    def mask_decoder(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                     multimask_output):
        coords = sparse_prompt_embeddings[:, 0, :].float()   # stock passes float64 points
        iou = torch.tensor([0.9, 0.8, 0.7])[None].repeat(len(coords), 1) - 1e-4 * coords[:, :1] / 1024
        return self.draw(coords), iou

    def postprocess_masks(self, masks, input_size, original_size):
        from segment_anything.modeling import Sam

        return Sam.postprocess_masks(self, masks, input_size, original_size)


class _Prompts:
    def get_dense_pe(self):
        return torch.zeros(1, 256, 64, 64)

    def __call__(self, points, boxes, masks):
        return points[0], None


def input_size(size):
    scale = 1024 / max(size)
    return int(size[0] * scale + 0.5), int(size[1] * scale + 0.5)


def both(draw, size, **kw):
    """(ours AutoMasks, stock list of annotations) on the same fake model and settings."""
    from segment_anything import SamAutomaticMaskGenerator

    sam, feats = FakeSam(draw), torch.zeros(1, 256, 64, 64)
    gen = SamAutomaticMaskGenerator(sam, **kw)
    pred = gen.predictor
    pred.set_image = lambda im: None
    pred.reset_image = lambda: None
    pred.features, pred.is_image_set = feats, True
    pred.original_size, pred.input_size = tuple(size), input_size(size)
    with torch.inference_mode():
        stock = gen.generate(np.zeros((*size, 3), np.uint8))
        ours = automask.automatic_masks(sam, feats, size, input_size(size), AutoMaskSettings(**kw))
    return ours, stock


def assert_same(ours, stock):
    """Same number of masks, the same masks (as a set) with the same predicted IoU each."""
    assert len(ours) == len(stock)
    key = lambda m: np.packbits(m).tobytes()   # noqa: E731
    theirs = {key(a["segmentation"]): a["predicted_iou"] for a in stock}
    for mask, score in zip(ours.masks, ours.scores):
        assert key(mask) in theirs
        assert theirs[key(mask)] == pytest.approx(float(score), abs=1e-6)


OPEN = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)


def test_discs_touching_the_border_match_stock():
    ours, stock = both(discs, (300, 400), **OPEN, box_nms_thresh=0.5)
    assert_same(ours, stock)
    h, w = 300, 400
    touching = [m for m in ours.masks if m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any()]
    assert touching, "no mask reaches the border: the case is not tested"
    assert np.array_equal(ours.boxes, automask.masks_to_boxes(ours.masks))


def test_no_mask_survives_in_either():
    ours, stock = both(discs, (300, 400), points_per_side=4, pred_iou_thresh=0.95, stability_score_thresh=0.0)
    assert len(ours) == 0 == len(stock)
    assert ours.masks.shape == (0, 300, 400) and ours.boxes.shape == (0, 4)
    ours, stock = both(discs, (300, 400), points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=1.0,
                       stability_score_offset=30.0)
    assert len(ours) == 0 == len(stock)


def test_one_mask_matches_stock():
    ours, stock = both(blob, (240, 320), **OPEN)
    assert len(ours) == 1
    assert_same(ours, stock)


def test_one_pixel_wide_objects_match_stock():
    ours, stock = both(lines, (300, 400), **OPEN, box_nms_thresh=0.7)
    assert_same(ours, stock)
    widths = ours.boxes[:, 2] - ours.boxes[:, 0]
    assert len(ours) >= 4 and widths.min() == 1, f"widths {widths}"


@pytest.mark.parametrize("size", [(1000, 40), (40, 1000)])
def test_very_tall_and_very_wide_images_match_stock(size):
    ours, stock = both(discs, size, **OPEN, box_nms_thresh=0.7)
    assert len(ours) > 0
    assert_same(ours, stock)


def test_stability_filter_on_matches_stock():
    ours, stock = both(discs, (300, 400), points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.9,
                       stability_score_offset=4.0, box_nms_thresh=1.0)
    assert 0 < len(ours) < 48
    assert_same(ours, stock)
    theirs = sorted(a["stability_score"] for a in stock)
    assert np.allclose(sorted(ours.stability.tolist()), theirs, atol=1e-6)
