"""core.sam.automask: settings, pure helpers, and the everything pipeline on real coco128 images."""
from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch

from core.sam import automask
from core.sam.automask import AutoMaskSettings


# ----------------------------------------------------------------- helpers
def _naive_components(mask: np.ndarray):
    """8-connected components of a bool mask by BFS: list of pixel counts."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    sizes = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        queue, size = deque([(y0, x0)]), 0
        while queue:
            y, x = queue.popleft()
            size += 1
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
        sizes.append(size)
    return sizes


def _box_iou(a, b):
    x0, y0 = np.maximum(a[:2], b[:2])
    x1, y1 = np.minimum(a[2:], b[2:])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.fixture(scope="module")
def tiny():
    """Small untrained SAM (real prompt encoder + decoder) and its embedding of a coco128 image."""
    from pathlib import Path

    from PIL import Image
    from segment_anything.build_sam import _build_sam
    from segment_anything.utils.transforms import ResizeLongestSide

    coco = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "coco128" / "images"
    paths = sorted(coco.glob("*.jpg"))
    if not paths:
        pytest.skip(f"real data not found at {coco}")
    image = np.asarray(Image.open(paths[1]).convert("RGB"))
    torch.manual_seed(0)
    sam = _build_sam(encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2,
                     encoder_global_attn_indexes=[1], checkpoint=None).eval()
    resized = ResizeLongestSide(1024).apply_image(image)
    with torch.inference_mode():
        feats = sam.image_encoder(sam.preprocess(torch.as_tensor(resized).permute(2, 0, 1)[None].float()))
    return sam, feats, image, resized.shape[:2]


def _run(tiny, **kw):
    sam, feats, image, input_size = tiny
    with torch.inference_mode():
        return automask.automatic_masks(sam, feats, image.shape[:2], input_size, AutoMaskSettings(**kw))


# ----------------------------------------------------------------- settings
@pytest.mark.parametrize("kw, field", [
    ({"points_per_side": 0}, "points_per_side"),
    ({"points_per_side": 2.5}, "points_per_side"),
    ({"points_per_batch": 0}, "points_per_batch"),
    ({"pred_iou_thresh": 1.5}, "pred_iou_thresh"),
    ({"stability_score_thresh": -0.1}, "stability_score_thresh"),
    ({"box_nms_thresh": "high"}, "box_nms_thresh"),
    ({"stability_score_offset": -1}, "stability_score_offset"),
    ({"min_mask_region_area": -5}, "min_mask_region_area"),
    ({"max_masks": 0}, "max_masks"),
])
def test_settings_reject_bad_values(kw, field):
    with pytest.raises(ValueError, match=field):
        AutoMaskSettings(**kw)


def test_settings_defaults_are_cpu_sized_and_sam_defaults_are_32():
    assert AutoMaskSettings().points_per_side == 16
    assert AutoMaskSettings.sam_defaults().points_per_side == 32


# ----------------------------------------------------------------- helpers
def test_point_grid_covers_cell_centres():
    grid = automask.point_grid(4, (100, 200))
    assert grid.shape == (16, 2) and grid.dtype == np.float32
    assert np.allclose(np.unique(grid[:, 0]), [25, 75, 125, 175])
    assert np.allclose(np.unique(grid[:, 1]), [12.5, 37.5, 62.5, 87.5])


def test_masks_to_boxes_exclusive_ends_and_empty():
    masks = np.zeros((2, 10, 20), dtype=bool)
    masks[0, 2:5, 3:9] = True
    boxes = automask.masks_to_boxes(masks)
    assert boxes.dtype == np.float32
    assert boxes[0].tolist() == [3, 2, 9, 5]
    assert boxes[1].tolist() == [0, 0, 0, 0]


def test_box_nms_drops_duplicates_keeps_best_first():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 11], [20, 20, 30, 30]], dtype=np.float32)
    keep = automask.box_nms(boxes, np.array([0.5, 0.9, 0.1]), 0.7)
    assert keep.tolist() == [1, 2]


def test_remove_small_regions_islands_holes_and_diagonals():
    mask = np.zeros((12, 12), dtype=bool)
    mask[1:8, 1:8] = True
    mask[4, 4] = False  # 1-pixel hole
    mask[10, 10] = True  # 1-pixel island
    mask[8, 8] = True  # diagonal neighbour of the big square: same island
    out, changed = automask.remove_small_regions(mask, 3, "islands")
    assert changed and not out[10, 10] and out[8, 8] and out[1:8, 1:8].sum() == 48
    out, changed = automask.remove_small_regions(mask, 3, "holes")
    assert changed and out[4, 4] and out[10, 10]
    out, changed = automask.remove_small_regions(mask, 1, "islands")
    assert not changed and np.array_equal(out, mask)
    # every island small -> the largest one stays
    tiny = np.zeros((5, 5), dtype=bool)
    tiny[0, 0] = tiny[3, 3] = tiny[3, 4] = True
    out, _ = automask.remove_small_regions(tiny, 10, "islands")
    assert out.sum() == 2 and out[3, 3] and out[3, 4]
    with pytest.raises(ValueError, match="mode"):
        automask.remove_small_regions(mask, 3, "blobs")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_remove_small_islands_agrees_with_bfs(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((40, 50)) < 0.35
    out, _ = automask.remove_small_regions(mask, 6, "islands")
    sizes = _naive_components(mask)
    assert sorted(_naive_components(out)) == sorted(s for s in sizes if s >= 6)
    assert not (out & ~mask).any()


# ----------------------------------------------------------------- pipeline
class _DiscSam:
    """A SAM stand-in with known answers: each point prompt gives discs of radius 40, 80, 160
    (input-frame pixels) centred on it, with predicted IoU 0.9, 0.8, 0.7 (minus a tiny tie-breaker).

    Untrained SAM predicts image-sized blobs that box NMS collapses to one mask; discs let the
    invariants (NMS, caps, shapes) be checked against exact expectations.
    """

    mask_threshold = 0.0
    radii = (40.0, 80.0, 160.0)

    def __init__(self):
        from types import SimpleNamespace

        self.image_encoder = SimpleNamespace(img_size=1024)
        self.prompt_encoder = _DiscPromptEncoder()
        self.mask_decoder = self._decode

    def _decode(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                multimask_output):
        coords = sparse_prompt_embeddings[:, 0, :]  # (B, 2) XY input frame
        centres = (torch.arange(256, dtype=torch.float32) + 0.5) * 4
        dist = torch.sqrt((centres[None, None, :] - coords[:, 0, None, None]) ** 2
                          + (centres[None, :, None] - coords[:, 1, None, None]) ** 2)
        logits = torch.stack([r - dist for r in self.radii], dim=1)
        iou = torch.tensor([0.9, 0.8, 0.7])[None].repeat(len(coords), 1) - 1e-6 * coords[:, :1]
        return logits, iou

    def postprocess_masks(self, masks, input_size, original_size):
        from segment_anything.modeling import Sam

        return Sam.postprocess_masks(self, masks, input_size, original_size)


class _DiscPromptEncoder:
    def get_dense_pe(self):
        return torch.zeros(1, 256, 64, 64)

    def __call__(self, points, boxes, masks):
        coords, _ = points
        return coords, None


def _run_discs(size=(300, 400), **kw):
    h, w = size
    scale = 1024 / max(h, w)
    input_size = (int(h * scale + 0.5), int(w * scale + 0.5))
    return automask.automatic_masks(_DiscSam(), torch.zeros(1, 256, 64, 64), size, input_size,
                                    AutoMaskSettings(**kw))


def test_pipeline_shapes_boxes_and_nms_invariants():
    h, w = 300, 400
    result = _run_discs((h, w), points_per_side=8, points_per_batch=5, pred_iou_thresh=0,
                        stability_score_thresh=0, box_nms_thresh=0.3)
    n = len(result)
    assert result.masks.shape == (n, h, w) and result.masks.dtype == bool
    assert result.scores.shape == (n,) and result.scores.dtype == np.float32
    assert result.boxes.shape == (n, 4) and result.boxes.dtype == np.float32
    assert result.points.shape == (n, 2) and result.stability.shape == (n,)
    assert np.all(np.diff(result.scores) <= 0)
    assert np.array_equal(result.boxes, automask.masks_to_boxes(result.masks))
    # best masks: the radius-40 discs (IoU 0.9), 64 of them, centred on the grid points
    assert n > 64 and np.allclose(result.scores[:64], 0.9, atol=1e-3)
    x, y = result.points[0]
    r = 40 * max(h, w) / 1024
    yy, xx = np.mgrid[:h, :w]
    disc = (xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2 < r ** 2
    inter = (disc & result.masks[0]).sum()
    assert inter / (disc | result.masks[0]).sum() > 0.9
    # NMS ran: no two kept boxes overlap above the threshold; without NMS there are more masks
    for i in range(n):
        for j in range(i + 1, n):
            assert _box_iou(result.boxes[i], result.boxes[j]) <= 0.3 + 0.05
    everything = _run_discs((h, w), points_per_side=8, pred_iou_thresh=0, stability_score_thresh=0,
                            box_nms_thresh=1.0)
    assert len(everything) == 192 > n
    # thresholds filter on predicted IoU and stability
    best = _run_discs((h, w), points_per_side=4, pred_iou_thresh=0.85, stability_score_thresh=0)
    assert len(best) == 16 and (best.scores > 0.85).all()
    capped = _run_discs((h, w), points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0,
                        max_masks=3)
    assert len(capped) == 3


def test_pipeline_thresholds_cap_and_no_reencoding(tiny, monkeypatch):
    sam, _, _, _ = tiny

    def refuse(*a, **k):
        raise AssertionError("the image must not be re-encoded")

    monkeypatch.setattr(sam.image_encoder, "forward", refuse)
    # untrained SAM predicts image-sized blobs: box NMS would keep one, so switch it off here
    everything = _run(tiny, points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0,
                      box_nms_thresh=1.0)
    assert len(everything) == 48
    capped = _run(tiny, points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0,
                  box_nms_thresh=1.0, max_masks=2)
    assert len(capped) == 2 and np.allclose(capped.scores, everything.scores[:2])
    cut = float(np.median(everything.scores))
    strict = _run(tiny, points_per_side=4, pred_iou_thresh=cut, stability_score_thresh=0,
                  box_nms_thresh=1.0)
    assert len(strict) > 0 and (strict.scores > cut).all()
    none = _run(tiny, points_per_side=4, pred_iou_thresh=1.0, stability_score_thresh=1.0)
    assert none.masks.shape == (0,) + everything.masks.shape[1:] and none.boxes.shape == (0, 4)


def test_min_region_area_leaves_no_small_islands(tiny):
    result = _run(tiny, points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0,
                  min_mask_region_area=400)
    assert len(result) > 0
    for mask in result.masks[:3]:
        sizes = automask.remove_small_regions(mask, 400, "islands")
        assert not sizes[1], "an island below the area threshold survived"


def test_pipeline_rejects_bad_inputs(tiny):
    sam, feats, image, input_size = tiny
    with pytest.raises(ValueError, match="features"):
        automask.automatic_masks(sam, feats[0], image.shape[:2], input_size)
    with pytest.raises(ValueError, match="input_size"):
        automask.automatic_masks(sam, feats, image.shape[:2], (2000, 10))
    with pytest.raises(TypeError, match="AutoMaskSettings"):
        automask.automatic_masks(sam, feats, image.shape[:2], input_size, {"points_per_side": 4})


def test_matches_stock_generator_on_same_embedding(tiny):
    """Same masks as segment_anything's SamAutomaticMaskGenerator (single crop) on the same embedding."""
    from segment_anything import SamAutomaticMaskGenerator

    sam, feats, image, input_size = tiny
    # untrained masks are image-sized blobs that NMS collapses; compare the candidates themselves
    settings = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.5,
                    stability_score_offset=0.02, box_nms_thresh=1.0)
    gen = SamAutomaticMaskGenerator(sam, **settings)
    pred = gen.predictor
    pred.set_image = lambda im: None  # reuse the embedding below instead of re-encoding
    pred.reset_image = lambda: None
    pred.features, pred.is_image_set = feats, True
    pred.original_size, pred.input_size = image.shape[:2], tuple(input_size)
    with torch.inference_mode():
        stock = gen.generate(image)
    ours = _run(tiny, **settings)
    assert len(stock) > 5
    assert len(ours) == len(stock)
    flat = ours.masks.reshape(len(ours), -1)
    matched = 0
    for ann in stock:
        m = ann["segmentation"].reshape(-1)
        inter = (flat & m).sum(1)
        union = (flat | m).sum(1)
        matched += (inter / np.maximum(union, 1)).max() >= 0.999
    assert matched == len(stock)


# ----------------------------------------------------------------- masks as they arrive
def test_coarse_to_fine_is_a_permutation_that_starts_spread_over_the_grid():
    order = automask.coarse_to_fine(16)
    assert sorted(order.tolist()) == list(range(256))
    rows, cols = np.divmod(order[:16], 16)
    assert set(rows.tolist()) == {0, 4, 8, 12} and set(cols.tolist()) == {0, 4, 8, 12}
    assert order[:4].tolist() == [0, 8, 128, 136]          # the coarsest level first, row-major
    assert automask.coarse_to_fine(1).tolist() == [0]
    assert sorted(automask.coarse_to_fine(5).tolist()) == list(range(25))


def test_partials_arrive_while_running_and_leave_the_result_unchanged(tiny):
    sam, feats, image, input_size = tiny
    cfg = AutoMaskSettings(points_per_side=4, points_per_batch=2, pred_iou_thresh=0,
                           stability_score_thresh=0, box_nms_thresh=1.0)
    partials = []
    with torch.inference_mode():
        plain = automask.automatic_masks(sam, feats, image.shape[:2], input_size, cfg)
        streamed = automask.automatic_masks(sam, feats, image.shape[:2], input_size, cfg,
                                            on_partial=lambda m, done: partials.append((m, done)),
                                            partial_every_s=0.0)
    assert np.array_equal(streamed.masks, plain.masks) and np.allclose(streamed.scores, plain.scores)
    assert len(partials) >= 4                               # one per batch that found something new
    fractions = [done for _, done in partials]
    assert fractions == sorted(fractions) and 0 < fractions[0] < 1
    counts = [len(m) for m, _ in partials]
    assert counts == sorted(counts) and counts[0] >= 1 and counts[-1] <= len(plain)
    first = partials[0][0]
    assert first.masks.shape[1:] == plain.masks.shape[1:] and (np.diff(first.scores) <= 0).all()
    final_masks = {m.tobytes() for m in plain.masks}        # no NMS here: every partial mask is final
    assert all(m.tobytes() in final_masks for m in partials[-1][0].masks)


def test_point_batches_run_the_batch_decoder_when_there_is_one():
    """load_sam may give batches a bf16 copy of the mask decoder (core.sam.precision): the
    automatic masks' batches run it, clicks keep `sam.mask_decoder`, and the results stay
    close to float32."""
    import copy

    from core import models
    from core.sam import fast_sam, probes

    torch.manual_seed(0)    # a model of its own: load_sam's shared one may carry other tests' hooks
    stock = models._build_sam("vit_tiny", None).eval().requires_grad_(False)
    fp32 = fast_sam.accelerate_sam(copy.deepcopy(stock), "cpu", dtype=torch.float32)
    mixed = fast_sam.accelerate_sam(copy.deepcopy(stock), "cpu", dtype=torch.float32,
                                    batch_decoder_dtype=torch.bfloat16)
    assert "batch_mask_decoder" not in fp32._modules and automask.batch_decoder(fp32) is fp32.mask_decoder
    assert next(mixed.batch_mask_decoder.parameters()).dtype == torch.bfloat16
    assert next(mixed.mask_decoder.parameters()).dtype == torch.float32
    calls = {"batch": 0, "click": 0}
    mixed.batch_mask_decoder.register_forward_hook(lambda *a: calls.__setitem__("batch", calls["batch"] + 1))
    mixed.mask_decoder.register_forward_hook(lambda *a: calls.__setitem__("click", calls["click"] + 1))
    features = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(0))
    coords = torch.tensor([[200.0, 300.0], [700.0, 500.0]])
    with torch.inference_mode():
        ref = automask.decode_point_batch(fp32, features, fp32.prompt_encoder.get_dense_pe(), coords)
        out = automask.decode_point_batch(mixed, features, mixed.prompt_encoder.get_dense_pe(), coords)
    assert calls == {"batch": 1, "click": 0}
    assert out[0].dtype == torch.float32 and out[0].shape == ref[0].shape == (6, 256, 256)
    assert probes.decoder_outputs_agree(ref, out)
    torch.testing.assert_close(out[1], ref[1], atol=0.02, rtol=0.05)
    from core.sam.segmenter import Segmenter

    Segmenter(mixed)   # clicks' priority reaches the batch decoder too (a registered submodule)
    assert all(m._forward_pre_hooks for m in mixed.batch_mask_decoder.modules() if not list(m.children()))
    mixed = fast_sam.accelerate_sam(mixed, enable=False)   # the stock module has no copy
    assert "batch_mask_decoder" not in mixed._modules and automask.batch_decoder(mixed) is mixed.mask_decoder
