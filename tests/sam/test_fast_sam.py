"""core.sam.fast_sam: precision choice, fused attention maths, equivalence with stock SAM on real images."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.sam import cpu, fast_sam, probes
from core.sam.fast_decoder import FastDecoderAttention, FastUpscaling
from core.sam.fast_ops import FastOptions
from core.sam.fast_vit import FastMLP, fused_rel_pos_attention


# ----------------------------------------------------------------- helpers
def _small_sam(seed: int = 0, rel_pos_std: float = 0.5):
    """A small untrained SAM (128-d, 2 blocks: 1 windowed, 1 global) with non-zero rel-pos tables.

    SAM zero-initialises its relative-position tables; random ones make the
    fused rel-pos path actually matter in the comparisons.
    """
    from segment_anything.build_sam import _build_sam

    torch.manual_seed(seed)
    sam = _build_sam(encoder_embed_dim=128, encoder_depth=2, encoder_num_heads=2,
                     encoder_global_attn_indexes=[1], checkpoint=None).eval()
    with torch.no_grad():
        for blk in sam.image_encoder.blocks:
            blk.attn.rel_pos_h.normal_(0, rel_pos_std)
            blk.attn.rel_pos_w.normal_(0, rel_pos_std)
    return sam


def _coco_images(coco_dir, n):
    from PIL import Image

    paths = sorted((coco_dir / "images").glob("*.jpg"))[:n]
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def _encoder_input(sam, image):
    from segment_anything.utils.transforms import ResizeLongestSide

    resized = ResizeLongestSide(sam.image_encoder.img_size).apply_image(image)
    x = torch.as_tensor(resized).permute(2, 0, 1)[None].float()
    return sam.preprocess(x), resized.shape[:2]


def _token_cosines(ref, out):
    """Cosine similarity per spatial token of two (1, C, h, w) embeddings: (h*w,)."""
    return F.cosine_similarity(ref.flatten(2)[0].T, out.flatten(2)[0].T, dim=1)


def _stock_rel_attention(q, k, v, scale, rel_h, rel_w, hw):
    from segment_anything.modeling.image_encoder import add_decomposed_rel_pos

    attn = (q * scale) @ k.transpose(-2, -1)
    attn = add_decomposed_rel_pos(attn, q, rel_h, rel_w, hw, hw)
    return attn.softmax(-1) @ v


# ----------------------------------------------------------------- precision
def test_cpu_bf16_follows_cpu_flags(monkeypatch):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert fast_sam.best_dtype("cpu") == torch.bfloat16
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    assert fast_sam.best_dtype("cpu") == torch.bfloat16
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert fast_sam.best_dtype("cpu") == torch.float32
    assert fast_sam.best_dtype(None) == torch.float32
    assert fast_sam.precision_name(torch.bfloat16) == "bf16"


def test_set_threads_validates():
    before = torch.get_num_threads()
    try:
        assert cpu.set_threads() == cpu.available_cpus()
        with pytest.raises(ValueError, match="thread count"):
            cpu.set_threads(0)
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------- fused attention maths
@pytest.mark.parametrize("hw, table", [((14, 14), 27), ((6, 9), None), ((8, 8), 9)])
def test_fused_rel_pos_attention_matches_stock_formula(hw, table):
    torch.manual_seed(1)
    h, w = hw
    c = 16
    q, k, v = (torch.randn(3, h * w, c) for _ in range(3))
    rel_h = torch.randn(table or 2 * h - 1, c)  # table=9 for 8x8 exercises the interpolation
    rel_w = torch.randn(table or 2 * w - 1, c)
    ref = _stock_rel_attention(q, k, v, c ** -0.5, rel_h, rel_w, hw)
    out = fused_rel_pos_attention(q, k, v, c ** -0.5, rel_h, rel_w, hw)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)
    # the relative terms matter here: plain attention gives something else
    plain = F.scaled_dot_product_attention(q, k, v, scale=c ** -0.5)
    assert (plain - ref).abs().max() > 1e-2


# ----------------------------------------------------------------- contract and switch
def test_accelerate_keeps_float32_contract_and_switch_restores_stock():
    stock = _small_sam()
    sam = fast_sam.accelerate_sam(copy.deepcopy(stock), "cpu", decoder_dtype=None)  # decoder cast too
    assert fast_sam.is_accelerated(sam)
    assert fast_sam.fast_dtype(sam) == fast_sam.best_dtype("cpu")
    x = torch.randn(1, 3, 1024, 1024)
    with torch.inference_mode():
        feats = sam.image_encoder(x)
        assert feats.dtype == torch.float32 and feats.shape == (1, 256, 64, 64)
        pts = (torch.tensor([[[500.0, 400.0]]]), torch.ones(1, 1, dtype=torch.int64))
        sparse, dense = sam.prompt_encoder(points=pts, boxes=None, masks=None)
        assert sparse.dtype == dense.dtype == torch.float32
        masks, iou = sam.mask_decoder(feats, sam.prompt_encoder.get_dense_pe(), sparse, dense, True)
        assert masks.dtype == iou.dtype == torch.float32 and masks.shape == (1, 3, 256, 256)

        sam = fast_sam.accelerate_sam(sam, enable=False)
        assert not fast_sam.is_accelerated(sam)
        assert all(p.dtype == torch.float32 for p in sam.parameters())
        assert {type(m) for m in sam.modules()} == {type(m) for m in stock.modules()}   # stock classes again
        assert sam.state_dict().keys() == stock.state_dict().keys()
        # stock forwards again; weights went through the compute dtype and back, so compare
        # with a stock module whose weights took the same round trip
        rounded = copy.deepcopy(stock)
        rounded.image_encoder.to(fast_sam.best_dtype("cpu")).float()
        torch.testing.assert_close(sam.image_encoder(x), rounded.image_encoder(x), atol=0, rtol=0)


def test_fused_linear_layers_match_stock_mlp_and_are_undone():
    from segment_anything.modeling.common import MLPBlock

    from core.sam.fast_ops import fused_linear_supported

    torch.manual_seed(5)
    mlp = MLPBlock(64, 256).eval()
    x = torch.randn(2, 7, 7, 64)
    with torch.inference_mode():
        ref = mlp(x)
        if fused_linear_supported(torch.float32):
            fast = FastMLP.from_stock(mlp, FastOptions("encoder", torch.float32))
            assert fast.lin1.weight is mlp.lin1.weight   # shared, not copied
            torch.testing.assert_close(fast(x), ref, atol=1e-4, rtol=1e-4)
    sam = fast_sam.accelerate_sam(_small_sam(), "cpu", dtype=torch.bfloat16)
    fused = isinstance(sam.image_encoder.blocks[0].mlp, FastMLP)
    assert fused == fused_linear_supported(torch.bfloat16) == sam.image_encoder.blocks[0].attn.fused
    sam = fast_sam.accelerate_sam(sam, enable=False)
    assert type(sam.image_encoder.blocks[0].mlp) is MLPBlock
    assert "fused" not in vars(sam.image_encoder.blocks[0].attn)


def test_fused_upscaling_matches_stock_and_is_undone():
    from core.sam.fast_ops import fused_conv_transpose_supported

    stock = _small_sam()
    fast = fast_sam.accelerate_sam(copy.deepcopy(stock), "cpu")
    up = fast.mask_decoder.output_upscaling
    assert isinstance(up, FastUpscaling) == fused_conv_transpose_supported(torch.float32)
    x = torch.randn(2, 256, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch.testing.assert_close(up(x), stock.mask_decoder.output_upscaling(x), atol=1e-5, rtol=1e-4)
    restored = fast_sam.accelerate_sam(fast, enable=False)
    assert type(restored.mask_decoder.output_upscaling) is torch.nn.Sequential


def test_model_built_in_inference_mode_works_on_the_fast_path():
    """Parameters created under inference_mode have no version counters; the caches must cope."""
    from segment_anything.build_sam import _build_sam

    with torch.inference_mode():
        torch.manual_seed(0)
        sam = fast_sam.accelerate_sam(_build_sam(64, 1, 2, [0], checkpoint=None).eval())
        sparse, dense = sam.prompt_encoder(points=(torch.rand(1, 1, 2) * 1000, torch.tensor([[1]])),
                                           boxes=None, masks=None)
        masks, iou = sam.mask_decoder(torch.randn(1, 256, 64, 64), sam.prompt_encoder.get_dense_pe(),
                                      sparse, dense, True)
    assert masks.shape == (1, 3, 256, 256) and torch.isfinite(iou).all()


def test_accelerate_twice_is_same_as_once():
    sam = fast_sam.accelerate_sam(_small_sam())
    sam = fast_sam.accelerate_sam(sam)
    x = torch.randn(1, 3, 1024, 1024)
    with torch.inference_mode():
        assert sam.image_encoder(x).dtype == torch.float32
    with pytest.raises(ValueError, match="dtype"):
        fast_sam.accelerate_sam(sam, dtype=torch.int8)


# ----------------------------------------------------------------- equivalence on real images
def test_encoder_and_decoder_match_stock_on_coco_images(coco_dir):
    """Fast path vs stock fp32: per-token cosine >= 0.999, low-res mask IoU >= 0.99 on the same prompts."""
    stock = _small_sam()
    fp32_fused = fast_sam.accelerate_sam(copy.deepcopy(stock), dtype=torch.float32)
    fast = fast_sam.accelerate_sam(copy.deepcopy(stock))
    rng = np.random.default_rng(0)
    for image in _coco_images(coco_dir, 2):
        x, (h, w) = _encoder_input(stock, image)
        with torch.inference_mode():
            ref = stock.image_encoder(x)
            exact = fp32_fused.image_encoder(x)
            out = fast.image_encoder(x)
        # reference is informative: tokens differ from each other
        assert ref.flatten(2)[0].T.std(0).mean() > 0.1
        assert _token_cosines(ref, exact).min() > 0.99999
        assert _token_cosines(ref, out).min() >= 0.999

        points = torch.as_tensor(rng.uniform([0, 0], [w, h], size=(8, 1, 2)), dtype=torch.float32)
        labels = torch.ones(8, 1, dtype=torch.int64)
        with torch.inference_mode():
            sparse, dense = stock.prompt_encoder(points=(points, labels), boxes=None, masks=None)
            pe = stock.prompt_encoder.get_dense_pe()
            ref_logits, ref_iou = stock.mask_decoder(ref, pe, sparse, dense, True)
            sparse, dense = fast.prompt_encoder(points=(points, labels), boxes=None, masks=None)
            logits, iou = fast.mask_decoder(out, fast.prompt_encoder.get_dense_pe(), sparse, dense, True)
        ref_masks = (ref_logits > 0).flatten(2)
        masks = (logits > 0).flatten(2)
        frac = ref_masks.float().mean(-1)
        assert ((frac > 0.01) & (frac < 0.99)).float().mean() > 0.5, "reference masks trivially empty/full"
        inter = (ref_masks & masks).sum(-1).float()
        union = (ref_masks | masks).sum(-1).float().clamp(min=1)
        assert (inter / union).min() >= 0.99
        torch.testing.assert_close(iou, ref_iou, atol=0.02, rtol=0.05)


@pytest.mark.slow
def test_vit_b_encoder_matches_stock_on_a_coco_image(coco_dir):
    """The real vit_b architecture (untrained): per-token cosine >= 0.999 vs fp32 eager."""
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    stock = sam_model_registry["vit_b"](checkpoint=None).eval()
    with torch.no_grad():  # make the rel-pos path matter (zero-initialised in untrained SAM)
        for blk in stock.image_encoder.blocks:
            blk.attn.rel_pos_h.normal_(0, 0.5)
            blk.attn.rel_pos_w.normal_(0, 0.5)
    x, _ = _encoder_input(stock, _coco_images(coco_dir, 1)[0])
    with torch.inference_mode():
        ref = stock.image_encoder(x)
        fast = fast_sam.accelerate_sam(stock)
        out = fast.image_encoder(x)
    assert ref.flatten(2)[0].T.std(0).mean() > 0.1
    assert _token_cosines(ref, out).min() >= 0.999


def test_decoder_shares_image_tokens_across_prompts_with_stock_results():
    stock = _small_sam()
    fast = fast_sam.accelerate_sam(copy.deepcopy(stock))
    torch.manual_seed(3)
    emb = torch.randn(1, 256, 64, 64)
    pts = (torch.rand(5, 2, 2) * 1000, torch.tensor([[1, 0]] * 5))
    box = torch.tensor([[100.0, 200.0, 600.0, 700.0]] * 5)
    mask_in = torch.randn(5, 1, 256, 256)
    with torch.inference_mode():
        pe = stock.prompt_encoder.get_dense_pe()
        for masks in (None, mask_in):  # shared image tokens / per-prompt dense input (stock path)
            sparse, dense = stock.prompt_encoder(points=pts, boxes=box, masks=masks)
            for multimask in (True, False):
                ref = stock.mask_decoder(emb, pe, sparse, dense, multimask)
                out = fast.mask_decoder(emb, pe, sparse, dense, multimask)
                assert out[0].shape == ref[0].shape == (5, 3 if multimask else 1, 256, 256)
                torch.testing.assert_close(out[0], ref[0], atol=1e-4, rtol=1e-4)
                torch.testing.assert_close(out[1], ref[1], atol=1e-5, rtol=1e-4)


def _stock_and_patched_attention(seed: int = 0):
    """segment_anything's decoder Attention (256-d, 8 heads, 128 internal) with random non-zero biases,
    and its fast class built from a copy."""
    from segment_anything.modeling.transformer import Attention

    torch.manual_seed(seed)
    stock = Attention(256, 8, downsample_rate=2).eval()
    with torch.no_grad():
        for lin in (stock.q_proj, stock.k_proj, stock.v_proj, stock.out_proj):
            lin.bias.normal_(0, 0.5)
    return stock, FastDecoderAttention.from_stock(copy.deepcopy(stock), FastOptions("decoder", torch.float32))


@pytest.mark.parametrize("image_batch", [1, 3])
def test_folded_cross_attention_matches_stock_both_ways(image_batch):
    stock, patched = _stock_and_patched_attention()
    tokens = torch.randn(3, 7, 256)
    image = torch.randn(image_batch, 300, 256)
    image_pe = image + torch.randn(1, 300, 256)
    with torch.inference_mode():
        # tokens -> image (few queries, many keys) and image -> tokens (many queries, few keys)
        for q, k, v in ((tokens, image_pe, image), (image_pe, tokens, tokens + 1)):
            expected = stock(q.expand(3, -1, -1), k.expand(3, -1, -1), v.expand(3, -1, -1))
            torch.testing.assert_close(patched(q, k, v), expected, atol=1e-5, rtol=1e-4)


def test_decoder_caches_the_image_side_per_embedding_and_matches_stock():
    stock = _small_sam()
    fast = fast_sam.accelerate_sam(copy.deepcopy(stock))
    cache = fast.mask_decoder.image_side
    torch.manual_seed(4)
    embeddings = [torch.randn(1, 256, 64, 64) for _ in range(cache.size + 1)]
    with torch.inference_mode():
        pe = fast.prompt_encoder.get_dense_pe()
        assert pe is fast.prompt_encoder.get_dense_pe()  # memoised: one tensor keys the cache
        torch.testing.assert_close(pe, stock.prompt_encoder.get_dense_pe())
        for round_ in range(2):  # second round: embeddings 1.. hit, embedding 0 was evicted
            for emb in embeddings:
                pts = (torch.rand(1, 1, 2) * 1000, torch.tensor([[1]]))
                sparse, dense = stock.prompt_encoder(points=pts, boxes=None, masks=None)
                ref = stock.mask_decoder(emb, pe, sparse, dense, True)
                out = fast.mask_decoder(emb, pe, sparse, dense, True)
                torch.testing.assert_close(out[0], ref[0], atol=1e-4, rtol=1e-4)
                torch.testing.assert_close(out[1], ref[1], atol=1e-5, rtol=1e-4)
    assert len(cache._entries) == cache.size
    emb = torch.randn(1, 256, 64, 64)  # a normal tensor: changed in place, the entry is not reused
    sparse, dense = stock.prompt_encoder(points=(torch.rand(1, 1, 2) * 1000, torch.tensor([[1]])),
                                         boxes=None, masks=None)
    with torch.no_grad():
        fast.mask_decoder(emb, pe, sparse, dense, True)
        emb.mul_(-1)
        ref = stock.mask_decoder(emb, pe, sparse, dense, True)
        torch.testing.assert_close(fast.mask_decoder(emb, pe, sparse, dense, True)[0], ref[0], atol=1e-4, rtol=1e-4)
    restored = fast_sam.accelerate_sam(fast, enable=False)
    assert type(restored.prompt_encoder) is type(stock.prompt_encoder) and "_dense_pe" not in vars(restored.prompt_encoder)


@pytest.mark.parametrize("original_size", [(480, 640), (640, 427), (500, 500), (37, 1000), (1500, 2000)])
def test_postprocess_upsamples_only_the_image_and_matches_stock_exactly(original_size):
    from segment_anything.utils.transforms import ResizeLongestSide

    stock = _small_sam()
    fast = fast_sam.accelerate_sam(copy.deepcopy(stock))
    input_size = ResizeLongestSide(1024).get_preprocess_shape(*original_size, 1024)
    logits = torch.randn(2, 3, 256, 256)
    with torch.inference_mode():
        out = fast.postprocess_masks(logits, input_size, original_size)
        ref = stock.postprocess_masks(logits, input_size, original_size)
    assert out.shape == ref.shape == (2, 3, *original_size)
    assert torch.equal(out, ref)


# ----------------------------------------------------------------- timing the mask decoder
def test_decoder_outputs_agree_ignores_only_near_zero_logits():
    gen = torch.Generator().manual_seed(0)
    masks, iou = torch.randn(2, 3, 256, 256, generator=gen), torch.rand(2, 3, generator=gen)
    assert probes.decoder_outputs_agree((masks, iou), (masks.clone(), iou.clone()))
    near_zero = torch.where(masks.abs() < 0.01, -masks, masks)   # signs flipped where |logit| ~ 0
    assert probes.decoder_outputs_agree((masks, iou), (near_zero, iou))
    flipped = masks.clone()
    flipped[0, 0, :64] *= -1                                     # a clear region changes sides
    assert not probes.decoder_outputs_agree((masks, iou), (flipped, iou))
    assert not probes.decoder_outputs_agree((masks, iou), (masks, iou + 0.1))
    assert not probes.decoder_outputs_agree((masks, iou), (masks[:1], iou[:1]))


def test_decoder_probe_times_copies_and_bf16_agrees():
    """The probe decodes with fast copies (the model is not touched); bf16 passes the agreement check."""
    sam = _small_sam()
    before = {k: v.clone() for k, v in sam.mask_decoder.state_dict().items()}
    probe = probes.DecoderProbe(sam, {"click": 1, "batch": 2}, repeats=1)
    assert probe.seconds("click", "fp32") > 0 and probe.seconds("batch", "bf16") > 0
    assert probe.agrees("batch") and probe.agrees("click")
    assert probe._outputs["batch", "bf16"][0].shape == (2, 3, 256, 256)
    assert not fast_sam.is_accelerated(sam) and type(sam.mask_decoder) is type(_small_sam().mask_decoder)
    assert all(torch.equal(v, sam.mask_decoder.state_dict()[k]) for k, v in before.items())
