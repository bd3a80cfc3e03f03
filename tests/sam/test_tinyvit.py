"""core.sam.tinyvit (vit_t): MobileSAM's key layout and random init, and its outputs on a real image.

The golden data (../shared/data/mobilesam_reference, see its README) is a checkpoint in the
exact key layout of mobile_sam.pt with seeded random weights, and what MobileSAM's own
SamPredictor computed with it for 4 prompts on a COCO128 image. It is loaded here through
the project's real weight path (core.models.load_sam with an explicit checkpoint).
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core import models
from core.sam.automask import AutoMasks, AutoMaskSettings
from core.sam.segmenter import Segmenter
from core.sam.tinyvit import TinyViTConfig, TinyViTImageEncoder, build_sam_vit_t, is_tinyvit, window_offset_index

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared/data/mobilesam_reference"
CHECKPOINT = REFERENCE / "mobile_sam_seed0.pt"


@pytest.fixture(scope="module")
def reference():
    """(state dict, reference outputs npz, prompts, image (H, W, 3) uint8) or a skip."""
    if not (CHECKPOINT.is_file() and (REFERENCE / "reference_outputs.npz").is_file()):
        pytest.skip(f"MobileSAM reference data not found at {REFERENCE} (../shared/data/mobilesam_reference "
                    f"beside the repo)")
    from core.io.images import load_image

    spec = json.loads((REFERENCE / "prompts.json").read_text())
    image_path = REFERENCE.parent / spec["image"]
    if not image_path.is_file():
        pytest.skip(f"reference image {image_path} not found")
    state = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    outputs = dict(np.load(REFERENCE / "reference_outputs.npz"))
    return state, outputs, spec["prompts"], load_image(image_path)


def _predict_all(sam, image, prompts):
    """segment_anything's SamPredictor over `sam` (as MobileSAM's predictor ran): embedding + per-prompt outputs."""
    from segment_anything import SamPredictor

    predictor = SamPredictor(sam)
    with torch.inference_mode():
        predictor.set_image(image)
        results = {}
        for name, p in prompts.items():
            _, iou, low = predictor.predict(
                point_coords=np.array(p["point_coords"]) if "point_coords" in p else None,
                point_labels=np.array(p["point_labels"]) if "point_labels" in p else None,
                box=np.array(p["box"]) if "box" in p else None,
                multimask_output=p["multimask_output"], return_logits=True)
            results[name] = (low, iou)
        return predictor.features.float().numpy(), results


def _token_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine per spatial token of two (1, C, h, w) arrays: (h*w,)."""
    ta, tb = (torch.from_numpy(np.ascontiguousarray(t)).flatten(2)[0].T for t in (a, b))
    return F.cosine_similarity(ta, tb, dim=1).numpy()


# ----------------------------------------------------------------- architecture
def test_window_offset_index_numbers_offsets_in_order_of_appearance():
    """Slots are the (|dy|, |dx|) offsets numbered as first met over all token pairs (TinyViT's table layout)."""
    for h, w in ((7, 7), (3, 5)):
        points = list(itertools.product(range(h), range(w)))
        slots: dict = {}
        expected = [[slots.setdefault((abs(p[0] - q[0]), abs(p[1] - q[1])), len(slots)) for q in points]
                    for p in points]
        assert torch.equal(window_offset_index(h, w), torch.tensor(expected))
        assert len(slots) == h * w


def test_shapes_and_registry_name():
    cfg = TinyViTConfig()
    assert cfg.embedding_size == 64
    small = TinyViTImageEncoder(TinyViTConfig(img_size=256)).eval()
    with torch.inference_mode():
        out = small(torch.randn(1, 3, 256, 256))
    assert out.shape == (1, 256, 16, 16)
    assert "vit_t" in models.sam_model_names()
    sam = models.load_sam("vit_t", untrained=True, fast=False, device="cpu")
    assert is_tinyvit(sam) and sam.image_encoder.img_size == 1024
    assert not is_tinyvit(models.load_sam("vit_tiny", untrained=True, fast=False, device="cpu"))


def test_key_layout_is_mobile_sams(reference):
    state = reference[0]
    mine = build_sam_vit_t().state_dict()
    assert set(mine) == set(state)
    assert all(mine[k].shape == state[k].shape for k in state)


def test_untrained_weights_are_mobilesams_random_init(reference):
    """Built after the same seed, every tensor equals MobileSAM's (same modules, same init order)."""
    state = reference[0]
    sam = models.load_sam("vit_t", untrained=True, fast=False, device="cpu")
    mine = sam.state_dict()
    worst = max(float((mine[k].double() - state[k].double()).abs().max()) for k in state)
    assert worst < 1e-6  # trunc_normal_ rounding differs by ~1e-8 between timm versions


def test_checkpoint_of_another_model_is_refused(tmp_path):
    tiny = models.load_sam("vit_tiny", untrained=True, fast=False, device="cpu")
    path = tmp_path / "not_mobile_sam.pt"
    torch.save(tiny.state_dict(), path)
    with pytest.raises(ValueError, match="does not fit this SAM.*missing keys"):
        models.load_sam("vit_t", path, fast=False, device="cpu")


# ----------------------------------------------------------------- against MobileSAM's own outputs
def test_exact_path_reproduces_mobilesam(reference):
    """The checkpoint through core.models (weights_only, strict keys), fast=False: within 1e-4 everywhere."""
    _, ref, prompts, image = reference
    sam = models.load_sam("vit_t", CHECKPOINT, fast=False, device="cpu")
    embedding, results = _predict_all(sam, image, prompts)
    assert embedding.shape == ref["image_embedding"].shape == (1, 256, 64, 64)
    assert np.abs(embedding - ref["image_embedding"]).max() <= 1e-4
    for name, (low, iou) in results.items():
        assert low.shape == ref[f"{name}__low_res_logits"].shape
        assert np.abs(low - ref[f"{name}__low_res_logits"]).max() <= 1e-4, name
        assert np.abs(iou - ref[f"{name}__iou_predictions"]).max() <= 1e-4, name


@pytest.mark.parametrize("precision", ["fp32", "auto", pytest.param("bf16", marks=pytest.mark.slow)])
def test_fast_path_reproduces_mobilesam(reference, precision):
    """The accelerated model: cosine >= 0.999 per embedding token, same candidate ranking, close logits.

    "bf16" is what CPUs with AVX512-BF16/AMX run ("auto" there); on CPUs without it bf16 is
    emulated (slow), hence the slow mark.
    """
    _, ref, prompts, image = reference
    sam = models.load_sam("vit_t", CHECKPOINT, fast=True, device="cpu", precision=precision)
    embedding, results = _predict_all(sam, image, prompts)
    assert _token_cosines(embedding, ref["image_embedding"]).min() >= 0.999
    for name, (low, iou) in results.items():
        want_low, want_iou = ref[f"{name}__low_res_logits"], ref[f"{name}__iou_predictions"]
        assert np.array_equal(np.argsort(-iou), np.argsort(-want_iou)), name
        cos = F.cosine_similarity(torch.from_numpy(low).flatten(1), torch.from_numpy(want_low).flatten(1), dim=1)
        assert float(cos.min()) >= 0.999, name
        if precision == "fp32":
            assert np.abs(low - want_low).max() <= 1e-4, name


# ----------------------------------------------------------------- the rest of the project, unchanged
def test_segmenter_clicks_and_everything_run_with_vit_t(coco_image):
    """core.sam.segmenter and core.sam.automask work on vit_t as on the ViT models (fast path on)."""
    image, _, _ = coco_image
    seg = Segmenter(models.load_sam("vit_t", untrained=True, device="cpu"))
    emb = seg.set_image(image)
    assert emb.features.shape == (1, 256, 64, 64)
    pred = seg.predict(emb, points=[[image.shape[1] / 2, image.shape[0] / 2]], labels=[1])
    assert pred.masks.shape == (3, *image.shape[:2]) and pred.masks.dtype == bool
    masks = seg.everything(emb, AutoMaskSettings(points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0))
    assert isinstance(masks, AutoMasks) and masks.masks.shape[1:] == image.shape[:2]
