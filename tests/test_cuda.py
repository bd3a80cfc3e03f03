"""The CUDA path: the same untrained models on the GPU agree with the CPU.

Skipped without a GPU (CI has none); run on a machine with one to check that path:
`python -m pytest tests/test_cuda.py`.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


def _image(h: int = 240, w: int = 320) -> np.ndarray:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    image[60:180, 80:220] = (200, 40, 40)
    return image


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.mark.parametrize("name", ["vit_tiny", "vit_t"])
@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_segmenter_on_cuda_matches_cpu(name, precision):
    from core.models import load_sam
    from core.sam.segmenter import Segmenter

    image = _image()
    cpu = Segmenter(load_sam(name, untrained=True, device="cpu", precision="fp32", fast=False))
    gpu = Segmenter(load_sam(name, untrained=True, device="cuda", precision=precision))
    emb_c, emb_g = cpu.set_image(image), gpu.set_image(image)
    got_c = cpu.predict(emb_c, points=[[150, 120]], labels=[1], multimask=False)
    got_g = gpu.predict(emb_g, points=[[150, 120]], labels=[1], multimask=False)
    assert got_g.masks.shape == got_c.masks.shape == (1, 240, 320)
    assert got_g.masks.dtype == bool
    # fp32 on the GPU uses TF32 / other kernels: masks agree closely, not bit for bit.
    assert _iou(got_g.masks[0], got_c.masks[0]) >= (0.97 if precision == "fp32" else 0.9)


def test_clip_on_cuda_matches_cpu():
    from core.embed import Embedder
    from core.models import load_clip

    crops = [_image(224, 224), _image(100, 60)]
    cpu = Embedder(load_clip("ViT-B-32", untrained=True, device="cpu")).embed_images(crops)
    gpu = Embedder(load_clip("ViT-B-32", untrained=True, device="cuda")).embed_images(crops)
    assert gpu.shape == cpu.shape == (2, 512) and gpu.dtype == np.float32
    assert np.all(np.sum(gpu * cpu, axis=1) >= 0.999)


def test_automatic_masks_on_cuda():
    from core.models import load_sam
    from core.sam.automask import AutoMaskSettings
    from core.sam.segmenter import Segmenter

    seg = Segmenter(load_sam("vit_tiny", untrained=True, device="cuda"))
    emb = seg.set_image(_image())
    out = seg.everything(emb, AutoMaskSettings(points_per_side=8, pred_iou_thresh=0.0,
                                               stability_score_thresh=0.0))
    assert len(out) >= 1
