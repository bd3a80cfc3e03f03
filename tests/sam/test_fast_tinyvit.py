"""core.sam.fast_tinyvit: the fast TinyViT forward computes what the exact module computes."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from core.sam import fast_sam, fast_tinyvit
from core.sam.tinyvit import TinyViTConfig, TinyViTImageEncoder, build_sam_vit_t

# 256 px: 64x64 after the stem, then 32, 16, 16: every stage pads its windows (32 % 7, 16 % 14, 16 % 7)
SMALL = TinyViTConfig(img_size=256)


def _encoder(seed: int = 0) -> TinyViTImageEncoder:
    """A small TinyViT with non-trivial BatchNorm statistics and attention biases (the init leaves them trivial)."""
    torch.manual_seed(seed)
    enc = TinyViTImageEncoder(SMALL).eval()
    with torch.no_grad():
        for m in enc.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
            if hasattr(m, "attention_biases"):
                m.attention_biases.normal_(0, 1)
    return enc


def _fast(enc, dtype=torch.float32):
    return fast_sam.accelerate_encoder(copy.deepcopy(enc), dtype)


def _token_cosines(a, b):
    return F.cosine_similarity(a.flatten(2)[0].T, b.flatten(2)[0].T, dim=1)


@pytest.fixture(scope="module")
def pair():
    enc = _encoder()
    return enc, _fast(enc)


def test_fp32_matches_exact(pair):
    exact, fast = pair
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want, got = exact(x), fast(x)
    assert got.shape == want.shape == (1, 256, 16, 16) and got.dtype == torch.float32
    assert float((got - want).abs().max()) <= 1e-4 * max(1.0, float(want.abs().max()))
    assert got.is_contiguous(memory_format=torch.channels_last)  # what the fast decoder reads without a copy


def test_batch_runs_image_by_image(pair):
    exact, fast = pair
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        got = fast(x)
        assert torch.allclose(got[1:], fast(x[1:]), atol=1e-6)
        assert torch.allclose(got, exact(x), atol=1e-4)


def test_plain_ops_fallback_matches(pair, monkeypatch):
    """Without oneDNN's fused ops (other builds, GPUs) the plain torch ops give the same result."""
    exact, _ = pair
    monkeypatch.setattr(fast_tinyvit, "fused_linear_supported", lambda dtype: False)
    monkeypatch.setattr(fast_tinyvit, "fused_conv_supported", lambda dtype: False)
    fast = _fast(exact)
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert not fast.plan().ops.fused_linear
        assert torch.allclose(fast(x), exact(x), atol=1e-4)


def test_bf16_stays_close():
    """bf16 GEMMs/convs with a float32 stream (CPUs with native bf16 pick this): every token still points the same way."""
    exact = _encoder(seed=4)
    fast = _fast(exact, torch.bfloat16)
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        want, got = exact(x), fast(x)
    assert got.dtype == torch.float32
    assert float(_token_cosines(want, got).min()) >= 0.99


def test_plan_follows_weight_changes():
    """Weights loaded (or edited) after acceleration are used: the plan is rebuilt."""
    exact = _encoder(seed=5)
    fast = _fast(exact)
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        before = fast(x)
    with torch.no_grad():
        for enc in (exact, fast):
            enc.layers[2].blocks[0].mlp.fc2.bias.add_(0.5)
            enc.layers[0].blocks[0].conv2.bn.running_mean.add_(0.3)
    with torch.inference_mode():
        after = fast(x)
        assert not torch.allclose(before, after, atol=1e-3)
        assert torch.allclose(after, exact(x), atol=1e-4)


def test_accelerate_sam_dispatches_and_restores():
    """core.sam.fast_sam.accelerate_sam switches a vit_t SAM's encoder to this path; enable=False restores it."""
    torch.manual_seed(0)
    sam = build_sam_vit_t(SMALL)
    sam = fast_sam.accelerate_sam(sam, "cpu", dtype=torch.float32)
    assert fast_sam.is_accelerated(sam) and fast_sam.fast_dtype(sam) == torch.float32
    assert isinstance(sam.image_encoder, fast_tinyvit.FastTinyViTEncoder)
    sam = fast_sam.accelerate_sam(sam, enable=False)
    assert not fast_sam.is_accelerated(sam) and type(sam.image_encoder) is TinyViTImageEncoder
    assert "_plan" not in vars(sam.image_encoder)


def test_conv3x3_rows_equals_whole_convolution():
    """Banded 3x3 convolution (halo rows, zero rows at the edges) equals one call over the whole map."""
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(1, 6, 13, 9, generator=gen).contiguous(memory_format=torch.channels_last)
    ops = fast_tinyvit._Ops(torch.float32, False, False)
    for stride, groups in ((1, 6), (2, 6), (2, 1)):
        weight = torch.randn(6, 6 // groups, 3, 3, generator=gen).contiguous(memory_format=torch.channels_last)
        conv = fast_tinyvit._Conv(weight, torch.randn(6, generator=gen), stride, groups)
        want = F.conv2d(x, weight, conv.bias, stride, 1, 1, groups)
        source = lambda i0, i1: x[:, :, i0:i1]  # noqa: E731
        bands = [fast_tinyvit.conv3x3_rows(source, 13, o0, min(o0 + 2, want.shape[2]), conv, ops, gelu=False)
                 for o0 in range(0, want.shape[2], 2)]
        assert torch.allclose(torch.cat(bands, dim=2), want, atol=1e-5)


@pytest.mark.parametrize("tokens", [64, 1 << 30])
def test_band_size_does_not_change_the_result(pair, monkeypatch, tokens):
    """Many small bands (partial last bands, halos everywhere) or one band per map: same output as exact."""
    exact, fast = pair
    monkeypatch.setattr(fast_tinyvit, "BAND_TOKENS", tokens)
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        assert torch.allclose(fast(x), exact(x), atol=1e-4)
