"""Fast SAM inference on CPU (and GPU) without changing what SAM computes.

A thin layer over the ``segment-anything`` package: it patches module forwards
in place (no fork) so that

* the image encoder's attention runs through
  ``torch.nn.functional.scaled_dot_product_attention`` (SDPA), with SAM's
  decomposed relative-position terms folded into augmented queries and keys
  (``q' = [q * scale, rel_h, rel_w]``, ``k' = [k, onehot(row), onehot(col)]``
  so ``q' . k' = scale * q . k + rel_h[row(k)] + rel_w[col(k)]``, exactly the
  stock score) instead of materialising and adding the broadcast bias;
* the image encoder keeps its tokens contiguous (stock code carries a
  channel-strided view through all blocks, so every LayerNorm/Linear copies);
* the image encoder (and, on request, the mask decoder) runs in the device's best precision
  (bfloat16 on CPUs with AVX512-BF16/AMX and on GPUs that support it,
  float16 on older GPUs, float32 elsewhere), casting inside so callers keep
  passing and receiving float32 tensors;
* the mask decoder (float32 by default, exact maths re-associated) shares the
  image tokens across a batch of prompts instead of copying the embedding once
  per prompt, computes the first layer's image-side projections once per image
  (a small cache keyed by the embedding tensor), folds the remaining image-side
  projections of its cross-attentions into the few prompt tokens (2.3x fewer
  multiply-adds), batches the four hypernetwork MLPs, and upsamples the final
  masks only over the rows/columns that cover the image;
* torch uses as many threads as this process may run on.

For a SAM whose image encoder is TinyViT ("vit_t", ``core.sam.tinyvit``) the
encoder items above are replaced by ``core.sam.fast_tinyvit`` (folded conv-BN,
channels-last bands, fused GELUs); the prompt encoder / mask decoder items
apply unchanged.

``accelerate_sam(sam)`` switches all of this on; ``accelerate_sam(sam,
enable=False)`` restores the stock forwards and float32 parameters. The
switch users see is ``core.models.load_sam(fast=False)``, a stock module.
"""
from __future__ import annotations

import collections
import copy
import functools
import os
import statistics
import threading
import time
import types
import weakref
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from core import config
from core.sam.automask import BATCH_DECODER
from core.sam.fast_common import _FAST_ATTR, _version, fused_linear_supported
from core.sam.fast_tinyvit import accelerate_encoder, restore_encoder
from core.sam.tinyvit import is_tinyvit

_STREAM_ATTR = "_samclip_stream_dtype"
_PE_ATTR = "_samclip_dense_pe"
_SIDE_ATTR = "_samclip_image_side"
_HYPER_ATTR = "_samclip_hypernetworks"


# --------------------------------------------------------------------- precision
@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset:
    """CPU feature flags of this machine from /proc/cpuinfo (empty set where unreadable)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bfloat16 matrix instructions (AVX512-BF16 or AMX-BF16).

    Checked at run time: /proc/cpuinfo flags first, then oneDNN's own probe
    (covers non-Linux hosts). Without native support bf16 is emulated and
    slower than float32, so the fast path stays in float32 there.
    """
    flags = cpu_flags()
    if flags:
        return bool({"avx512_bf16", "amx_bf16"} & flags)
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except Exception:  # pragma: no cover - depends on the torch build
        return False


def best_dtype(device=None) -> torch.dtype:
    """The precision ``device``'s capability flags suggest ("cpu", "cuda", "cuda:0", torch.device).

    CPU: bfloat16 where the CPU supports it natively, else float32 (a flag is not speed:
    ``core.models.load_sam``'s "auto" measures on such CPUs, see core.sam.precision).
    CUDA: bfloat16 where the GPU supports it, else float16. Anything else: float32.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dev.type == "cpu":
        return torch.bfloat16 if cpu_supports_bf16() else torch.float32
    return torch.float32


PRECISIONS = dict(zip(config.SAM_PRECISIONS, (None, torch.float32, torch.bfloat16, torch.float16)))


def parse_precision(name: str) -> Optional[torch.dtype]:
    """ "auto" | "fp32" | "bf16" | "fp16" -> the dtype for ``accelerate_sam`` (None = best_dtype)."""
    key = str(name).strip().lower()
    if key not in PRECISIONS:
        raise ValueError(f"unknown SAM precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    return PRECISIONS[key]


def precision_name(dtype: torch.dtype) -> str:
    """Short name of a dtype for reports: "bf16", "fp16" or "fp32"."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))


def available_cpus() -> int:
    """Number of CPUs this process may run on (cgroup/affinity aware where the OS says so)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def set_threads(n: Optional[int] = None) -> int:
    """Set torch's intra-op threads to ``n`` (default: the CPUs available); returns the count used."""
    n = available_cpus() if n is None else int(n)
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


# ------------------------------------------------------------ fused linear layers
def _fused_linear_forward(self, x: torch.Tensor) -> torch.Tensor:
    """nn.Linear forward through oneDNN's linear op (bias added in the GEMM, no separate copy)."""
    return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


def _fused_mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
    """segment_anything MLPBlock forward with its exact GELU fused into lin1 as a oneDNN post-op.

    Stock runs lin1, then GELU as a separate pass over the (tokens, 4*dim) hidden
    tensor; here GELU is applied to the GEMM's float32 accumulators before the
    result is rounded to the weights' dtype (same function, one rounding fewer).
    """
    hidden = torch.ops.mkldnn._linear_pointwise(x, self.lin1.weight, self.lin1.bias, "gelu", [], "none")
    return _fused_linear_forward(self.lin2, hidden)


@functools.lru_cache(maxsize=8)
def fused_conv_transpose_supported(dtype: torch.dtype) -> bool:
    """True when oneDNN's transposed convolution with a GELU post-op runs here and matches stock."""
    op = getattr(torch.ops.mkldnn, "_convolution_transpose_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        conv = torch.nn.ConvTranspose2d(8, 4, 2, 2).to(dtype)
        x = torch.randn(1, 8, 5, 6, generator=gen).to(dtype).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            ref = F.gelu(conv(x)).float()
            out = _conv_transpose_gelu(conv, x).float()
        return out.shape == ref.shape and float((out - ref).abs().max()) <= 0.02 * float(ref.abs().max())
    except Exception:  # pragma: no cover - depends on the torch build
        return False


def _conv_transpose_gelu(conv, x: torch.Tensor) -> torch.Tensor:
    """GELU(conv(x)) for an nn.ConvTranspose2d in one oneDNN call (exact erf GELU as a post-op)."""
    return torch.ops.mkldnn._convolution_transpose_pointwise(
        x, conv.weight, conv.bias, list(conv.padding), list(conv.output_padding), list(conv.stride),
        list(conv.dilation), conv.groups, "gelu", [], "none")


def _is_upscaling_with_gelu(seq) -> bool:
    """True for SAM's output_upscaling: ConvT, LayerNorm2d, GELU, ConvT, GELU (exact GELUs)."""
    kinds = [type(m).__name__ for m in seq]
    return (kinds == ["ConvTranspose2d", "LayerNorm2d", "GELU", "ConvTranspose2d", "GELU"]
            and all(m.approximate == "none" for m in (seq[2], seq[4])))


def _fused_upscaling_forward(self, x: torch.Tensor) -> torch.Tensor:
    """The mask decoder's output_upscaling with the last GELU fused into its transposed convolution.

    x: (B, 256, 64, 64) -> (B, 32, 256, 256), channels-last; same maths as stock,
    minus one pass over the largest tensor of the decoder.
    """
    up1, norm, act, up2, _ = self
    return _conv_transpose_gelu(up2, act(norm(up1(x))))


def _fused_linear_modules(sam):
    """(MLP blocks, Linear layers) of the image encoder that accelerate_sam may route through oneDNN."""
    blocks = list(getattr(sam.image_encoder, "blocks", ()))  # TinyViT encoders have none at the top
    return [b.mlp for b in blocks], [lin for b in blocks for lin in (b.attn.qkv, b.attn.proj)]


# ------------------------------------------------------------ fused attention
def _rel_pos_table(size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative-position embeddings for query/key positions of one axis: (size, size, C), [q, k].

    Same as segment_anything's ``get_rel_pos(size, size, rel_pos)`` (square
    attention, so no coordinate rescaling), including its linear interpolation
    when the table was trained for another size.
    """
    length = 2 * size - 1
    if rel_pos.shape[0] != length:
        rel_pos = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=length, mode="linear"
        ).reshape(-1, length).permute(1, 0)
    coords = torch.arange(size, device=rel_pos.device)
    index = coords[:, None] - coords[None, :] + (size - 1)
    return rel_pos[index]


@functools.lru_cache(maxsize=16)
def _key_position_onehots(h: int, w: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    """One-hot row and column of each key token: (h*w, h + w), row-major token order."""
    rows = torch.arange(h, device=device).repeat_interleave(w)
    cols = torch.arange(w, device=device).repeat(h)
    onehot = torch.zeros(h * w, h + w, device=device, dtype=dtype)
    onehot[torch.arange(h * w, device=device), rows] = 1
    onehot[torch.arange(h * w, device=device), h + cols] = 1
    return onehot


def fused_rel_pos_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    rel_pos_h: Optional[torch.Tensor],
    rel_pos_w: Optional[torch.Tensor],
    hw: Tuple[int, int],
) -> torch.Tensor:
    """softmax(scale * q k^T + rel_h + rel_w) v through SDPA, without the (N, N) bias tensor.

    q, k, v: (..., N, C), any leading dims and strides, N = h*w tokens in
    row-major order. rel_pos_h/w: SAM's (2h-1, C) / (2w-1, C) tables, or None
    for plain attention. Returns (..., N, C) in q's dtype (a view into a
    wider buffer). The relative terms ride along as extra query/key channels
    (queries carry ``rel_h``/``rel_w`` of their position, keys a one-hot of
    their row and column); q, k and v are written once into zero-padded
    buffers of a common width so SDPA's fused kernels apply.
    """
    h, w = hw
    c = q.shape[-1]
    if rel_pos_h is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    n = h * w
    lead = q.shape[:-2]
    width = -(-(c + h + w) // 16) * 16  # multiple of 16 for the vectorised kernels
    q_aug = q.new_empty(*lead, n, width)
    k_aug = q.new_empty(*lead, n, width)
    v_aug = q.new_zeros(*lead, n, width)
    q_aug[..., c + h + w:] = 0
    k_aug[..., c + h + w:] = 0
    q_aug[..., :c] = q * scale
    rq = q.reshape(-1, h, w, c)
    q_aug[..., c:c + h] = torch.einsum(
        "bhwc,hkc->bhwk", rq, _rel_pos_table(h, rel_pos_h).to(q.dtype)).reshape(*lead, n, h)
    q_aug[..., c + h:c + h + w] = torch.einsum(
        "bhwc,wkc->bhwk", rq, _rel_pos_table(w, rel_pos_w).to(q.dtype)).reshape(*lead, n, w)
    k_aug[..., :c] = k
    k_aug[..., c:c + h + w] = _key_position_onehots(h, w, str(q.device), q.dtype)
    v_aug[..., :c] = v
    return F.scaled_dot_product_attention(q_aug, k_aug, v_aug, scale=1.0)[..., :c]


def _encoder_attention_forward(self, x: torch.Tensor) -> torch.Tensor:
    """Drop-in forward for segment_anything.modeling.image_encoder.Attention (B, H, W, C) -> same."""
    b, h, w, _ = x.shape
    qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # (B, heads, N, C) strided views, copied once below
    if self.use_rel_pos:
        out = fused_rel_pos_attention(q, k, v, self.scale, self.rel_pos_h, self.rel_pos_w, (h, w))
    else:
        out = fused_rel_pos_attention(q, k, v, self.scale, None, None, (h, w))
    out = out.permute(0, 2, 1, 3).reshape(b, h, w, -1)
    return self.proj(out)


# ------------------------------------------------------------ dtype wrappers
def _encoder_forward(self, x: torch.Tensor) -> torch.Tensor:
    """ImageEncoderViT forward: float32 in/out, the module's dtype inside, contiguous tokens.

    Stock code permutes the patch embedding (B, C, H, W) -> (B, H, W, C) as a
    view, and every residual add keeps that channel-strided layout, so each
    LayerNorm and Linear of every block first copies its input. Making the
    tokens contiguous once removes those copies; the maths is unchanged.
    The residual stream and the neck run in ``_STREAM_ATTR`` (float32 by
    default) while attention and MLP compute in the module's dtype.
    """
    x = self.patch_embed(x.to(self.patch_embed.proj.weight.dtype))
    stream = getattr(self, _STREAM_ATTR)
    x = x.to(stream)
    if self.pos_embed is not None:
        x = x + self.pos_embed.to(stream)
    x = x.contiguous()
    for blk in self.blocks:
        x = blk(x)
    return self.neck(x.permute(0, 3, 1, 2).to(self.neck[0].weight.dtype)).float()


def _encoder_block_forward(self, x: torch.Tensor) -> torch.Tensor:
    """segment_anything Block forward with a higher-precision residual stream.

    x: (B, H, W, C) in the stream dtype (float32); LayerNorms run in that
    dtype, attention and MLP each in its own weights' dtype (bf16; a module
    cast back to float32 runs in float32), and their outputs are added back in
    the stream dtype, so rounding does not accumulate over the blocks.
    """
    from segment_anything.modeling.image_encoder import window_partition, window_unpartition

    dtype = self.attn.qkv.weight.dtype
    y = self.norm1(x).to(dtype)
    if self.window_size > 0:
        h, w = y.shape[1], y.shape[2]
        y, pad_hw = window_partition(y, self.window_size)
    y = self.attn(y)
    if self.window_size > 0:
        y = window_unpartition(y, self.window_size, pad_hw, (h, w))
    x = x + y
    return x + self.mlp(self.norm2(x).to(self.mlp.lin1.weight.dtype))


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """t in dtype; a batch-broadcast tensor (stride 0 on dim 0) is cast once and re-expanded."""
    if t.dtype == dtype:
        return t
    if t.dim() > 0 and t.shape[0] > 1 and t.stride(0) == 0:
        return t[:1].to(dtype).expand(t.shape)
    return t.to(dtype)


def _decoder_forward(self, image_embeddings, image_pe, sparse_prompt_embeddings,
                     dense_prompt_embeddings, multimask_output):
    """Mask decoder forward with float32 in/out and the module's dtype inside."""
    dtype = getattr(self, _FAST_ATTR)
    masks, iou = type(self).forward(
        self,
        _cast(image_embeddings, dtype),
        _cast(image_pe, dtype),
        _cast(sparse_prompt_embeddings, dtype),
        _cast(dense_prompt_embeddings, dtype),
        multimask_output,
    )
    return masks.float(), iou.float()


# Attention layers of the mask decoder with fewer than this many keys (or queries) on both sides
# (token self-attention) use the plain projections; folding pays off against image tokens.
_FOLD_MIN_TOKENS = 64


def _batched_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(Ba, n, k) @ (Bb, k, m) with Ba or Bb equal to 1 broadcast; a shared side is one wide GEMM."""
    if a.shape[0] == b.shape[0]:
        return a @ b
    if a.shape[0] == 1:  # one left matrix against many right ones: (n, k) @ (k, Bb*m)
        bb, k, m = b.shape
        return (a[0] @ b.permute(1, 0, 2).reshape(k, bb * m)).reshape(-1, bb, m).transpose(0, 1)
    return a @ b[0]


def _fold_keys_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Few queries against many keys (tokens -> image) without projecting the keys and values.

    q: (B, Nq, E); k, v: (B or 1, Nk, E) with Nk >> Nq. Per head h the score
    ``(W_q q + b_q)_h . (W_k k + b_k)_h`` equals ``[(W_q q + b_q)_h W_k,h] . k``
    plus a per-query constant that softmax ignores, and since each query's
    weights sum to 1, ``sum_i a_i (W_v v_i + b_v) = W_v (sum_i a_i v_i) + b_v``.
    So the key/value projections (2 Nk E I multiply-adds) become products
    with H*Nq folded query rows (2 Nk E H Nq); same maths, re-associated.
    """
    b, nq, _ = q.shape
    heads, e = self.num_heads, k.shape[-1]
    d = self.internal_dim // heads
    qh = self.q_proj(q).view(b, nq, heads, d)
    folded = torch.einsum("bnhd,hde->bhne", qh, self.k_proj.weight.view(heads, d, e)) * d ** -0.5
    scores = _batched_matmul(folded.reshape(b, heads * nq, e), k.transpose(1, 2))
    context = _batched_matmul(scores.softmax(dim=-1), v).view(b, heads, nq, e)
    out = torch.einsum("bhne,hde->bnhd", context, self.v_proj.weight.view(heads, d, e))
    return self.out_proj(out.reshape(b, nq, heads * d) + self.v_proj.bias)


def _per_head(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, H*d) -> (H, B*N, d): heads first, every prompt's tokens in one matrix per head."""
    b, n, c = x.shape
    return x.view(b * n, heads, c // heads).transpose(0, 1)


def _folded_image_weights(attn, image: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Attention weights of image queries over prompt tokens without projecting the image.

    image: (B or 1, N, E) image tokens (+PE); k: (B, Nk, E) tokens (+PE). Per head the
    score ``(W_q x + b_q)_h . k'_h`` is ``x . (W_q,h^T k'_h) + b_q,h . k'_h``, so the
    N x E x I query projection becomes a product with H*Nk folded columns.
    Returns (B, H*Nk, N): for each image token a softmax over Nk per head.
    """
    b, nk, e = k.shape
    heads = attn.num_heads
    d = attn.internal_dim // heads
    kh = _per_head(attn.k_proj(k), heads) * d ** -0.5  # (H, B*Nk, d), scale folded in
    folded = torch.bmm(kh, attn.q_proj.weight.view(heads, d, e))  # (H, B*Nk, E)
    folded = folded.view(heads, b, nk, e).transpose(0, 1).reshape(b, heads * nk, e)
    bias = torch.bmm(kh, attn.q_proj.bias.view(heads, d, 1)).view(heads, b, nk).transpose(0, 1)
    # scores as (B, H*Nk, N): softmax then runs over a strided axis of Nk, vectorised over the image
    scores = _batched_matmul(folded, image.transpose(1, 2)) + bias.reshape(b, heads * nk, 1)
    return scores.view(b, heads, nk, -1).softmax(dim=2).view(b, heads * nk, -1)


def _cached_image_weights(attn, side: "_ImageSide", k: torch.Tensor) -> torch.Tensor:
    """Like ``_folded_image_weights`` for the first layer, from the cached (H, N, d) image queries."""
    b, nk, _ = k.shape
    heads = attn.num_heads
    d = attn.internal_dim // heads
    kh = _per_head(attn.k_proj(k), heads) * d ** -0.5  # (H, B*Nk, d)
    scores = torch.bmm(kh, side.q.transpose(1, 2))  # (H, B*Nk, N)
    return scores.view(heads, b, nk, -1).softmax(dim=2).transpose(0, 1).reshape(b, heads * nk, -1)


def _image_update(attn, weights: torch.Tensor, v: torch.Tensor, residual: Optional[torch.Tensor] = None):
    """Output of image->token attention from its (B, H*Nk, N) weights; v: (B, Nk, E) tokens.

    ``W_o sum_h,t a_ht v'_ht + b_o`` is ``sum_h,t a_ht (W_o,h v'_ht + b_o / H)`` (each head's
    weights sum to 1), so the N x I x E output projection becomes a product with
    H*Nk folded rows, and a residual (B or 1, N, E) is added by the same GEMM.
    Returns (B, N, E).
    """
    b, nk, e = v.shape
    heads = attn.num_heads
    d = attn.internal_dim // heads
    vh = _per_head(attn.v_proj(v), heads)  # (H, B*Nk, d)
    values = torch.bmm(vh, attn.out_proj.weight.view(e, heads, d).transpose(0, 1).transpose(1, 2))
    values = values.view(heads, b, nk, e).transpose(0, 1).reshape(b, heads * nk, e) + attn.out_proj.bias / heads
    if residual is None:
        return torch.bmm(weights.transpose(1, 2), values)
    return torch.baddbmm(residual, weights.transpose(1, 2), values)


def _fold_queries_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Many queries against few keys (image -> tokens) without projecting queries or outputs.

    q: (B or 1, Nq, E) with Nq >> Nk; k, v: (B, Nk, E). See ``_folded_image_weights``
    and ``_image_update``: both Nq x E x I projections become products with H*Nk
    folded columns. Same maths, re-associated.
    """
    return _image_update(self, _folded_image_weights(self, q, k), v)


def _decoder_attention_forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Drop-in forward for segment_anything.modeling.transformer.Attention (same maths as stock).

    Cross-attention between the few prompt tokens and the 4096 image tokens
    folds the projections of the image side into the token side (see
    ``_fold_keys_attention`` / ``_fold_queries_attention``: 2.3x fewer
    multiply-adds for SAM's 8 heads, 7 tokens, 128 internal channels); the
    rest runs through SDPA. q: (B or 1, Nq, E), k/v: (B or 1, Nk, E).
    """
    nq, nk = q.shape[1], k.shape[1]
    heads = self.num_heads
    if nk >= _FOLD_MIN_TOKENS and heads * nq < self.internal_dim:
        return _fold_keys_attention(self, q, k, v)
    if nq >= _FOLD_MIN_TOKENS and heads * nk < self.internal_dim:
        return _fold_queries_attention(self, q, k, v)
    q = self._separate_heads(self.q_proj(q), heads)
    k = self._separate_heads(self.k_proj(k), heads)
    v = self._separate_heads(self.v_proj(v), heads)
    if q.shape[0] != k.shape[0]:  # shared image tokens (batch 1) against per-prompt tokens
        batch = max(q.shape[0], k.shape[0])
        q, k, v = (t.expand(batch, -1, -1, -1) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return self.out_proj(self._recombine_heads(out))


def _layernorm2d_forward(self, x: torch.Tensor) -> torch.Tensor:
    """segment_anything's LayerNorm2d (over channels of NCHW) as one fused layer_norm call."""
    y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
    return y.permute(0, 3, 1, 2)


def _same_for_all_prompts(t: torch.Tensor) -> bool:
    """True when a (B, ...) tensor holds one value broadcast over the batch (B == 1 or stride 0)."""
    return t.shape[0] == 1 or t.stride(0) == 0


def _tokens(t: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C) contiguous rows (a view when t is channels-last)."""
    return t.contiguous(memory_format=torch.channels_last).flatten(2).transpose(1, 2)


@dataclass(frozen=True)
class _ImageSide:
    """What the decoder's first layer computes from the image alone (no prompt), per image.

    keys, keys_pe: (1, N, E) image tokens with the dense prompt added, and with the
    positional encoding too; k, v: (1, H, N, d) the first token->image attention's keys
    and values; q: (H, N, d) the first image->token attention's queries. N = 64*64 tokens.
    """

    keys: torch.Tensor
    keys_pe: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    q: torch.Tensor


def _image_side(layer, keys: torch.Tensor, keys_pe: torch.Tensor) -> _ImageSide:
    """Project the image tokens for the first TwoWayAttentionBlock once (keys: (1, N, E))."""
    t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
    return _ImageSide(keys, keys_pe,
                      t2i._separate_heads(t2i.k_proj(keys_pe), t2i.num_heads).contiguous(),
                      t2i._separate_heads(t2i.v_proj(keys), t2i.num_heads).contiguous(),
                      i2t._separate_heads(i2t.q_proj(keys_pe), i2t.num_heads)[0].contiguous())


class _ImageSideCache:
    """A few recent images' first-layer projections, keyed by the embedding and PE tensors.

    An entry is used only while both tensors are alive (weak references), unchanged
    (same version counter, where torch tracks one: inference-mode tensors have none
    and are taken as immutable) and the dense prompt is the same broadcast vector.
    """

    def __init__(self, size: int = 4):
        self.size = size
        self._entries: "collections.OrderedDict[tuple, tuple]" = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, layer, image_embeddings, image_pe, dense) -> _ImageSide:
        """The _ImageSide for (1, E, h, w) embeddings + (1, E, 1, 1)-broadcast dense prompt and PE."""
        key = (id(image_embeddings), _version(image_embeddings), id(image_pe), _version(image_pe))
        vector = dense[0, :, 0, 0]
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                emb_ref, pe_ref, cached_vector, side = entry
                if emb_ref() is image_embeddings and pe_ref() is image_pe and torch.equal(cached_vector, vector):
                    self._entries.move_to_end(key)
                    return side
        keys = _tokens(image_embeddings + dense[:1])
        side = _image_side(layer, keys, keys + _tokens(image_pe))
        with self._lock:
            self._entries[key] = (weakref.ref(image_embeddings), weakref.ref(image_pe), vector.clone(), side)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return side


def _first_token_to_image(attn, q: torch.Tensor, side: _ImageSide) -> torch.Tensor:
    """Token->image attention of the first layer against cached keys/values; q: (B, Nq, E)."""
    b, nq, _ = q.shape
    qh = attn._separate_heads(attn.q_proj(q), attn.num_heads)  # (B, H, Nq, d)
    # every query attends independently: fold the prompt batch into the query axis
    flat = qh.transpose(0, 1).reshape(1, attn.num_heads, b * nq, -1)
    out = F.scaled_dot_product_attention(flat, side.k, side.v)
    out = out.view(attn.num_heads, b, nq, -1).permute(1, 2, 0, 3).reshape(b, nq, -1)
    return attn.out_proj(out)


def _two_way_block(layer, queries, keys, keys_pe, query_pe, key_pe, side: Optional[_ImageSide]):
    """segment_anything's TwoWayAttentionBlock forward, same operations in the same order.

    keys_pe (= keys + key_pe) is computed once per block instead of twice; with
    ``side`` (first layer, shared image) the image-side projections come from
    the cache; the image->token output and its residual add are one GEMM.
    Returns (queries, keys, keys + key_pe).
    """
    if layer.skip_first_layer_pe:
        queries = layer.self_attn(q=queries, k=queries, v=queries)
    else:
        q = queries + query_pe
        queries = queries + layer.self_attn(q=q, k=q, v=queries)
    queries = layer.norm1(queries)
    q = queries + query_pe
    if side is not None:
        attn_out = _first_token_to_image(layer.cross_attn_token_to_image, q, side)
    else:
        attn_out = layer.cross_attn_token_to_image(q=q, k=keys_pe, v=keys)
    queries = layer.norm2(queries + attn_out)
    queries = layer.norm3(queries + layer.mlp(queries))
    q = queries + query_pe
    i2t = layer.cross_attn_image_to_token
    if side is not None:
        weights = _cached_image_weights(i2t, side, q)
    else:
        weights = _folded_image_weights(i2t, keys_pe, q)
    keys = layer.norm4(_image_update(i2t, weights, queries, residual=keys))
    return queries, keys, keys + key_pe


def _two_way_transformer(transformer, keys, keys_pe, key_pe, tokens, side: Optional[_ImageSide] = None):
    """TwoWayTransformer forward on token-major tensors: keys/keys_pe/key_pe (B or 1, N, E), tokens (B, T, E).

    Returns (queries (B, T, E), keys (B or 1, N, E)) like the stock module.
    """
    queries = tokens
    for i, layer in enumerate(transformer.layers):
        queries, keys, keys_pe = _two_way_block(layer, queries, keys, keys_pe, tokens, key_pe,
                                                side if i == 0 else None)
    attn_out = transformer.final_attn_token_to_image(q=queries + tokens, k=keys_pe, v=keys)
    return transformer.norm_final_attn(queries + attn_out), keys


def _stacked_hypernetworks(decoder) -> list:
    """The mask decoder's per-mask-token MLPs as stacked (weight (M, in, out), bias (M, 1, out)) per layer.

    Rebuilt whenever a parameter changes (version counters), so weights loaded
    after ``accelerate_sam`` are picked up.
    """
    mlps = decoder.output_hypernetworks_mlps
    params = [p for mlp in mlps for p in mlp.parameters()]
    versions = tuple(_version(p) for p in params) + tuple(p.data_ptr() for p in params)
    cached = decoder.__dict__.get(_HYPER_ATTR)
    if cached is None or cached[0] != versions:
        with torch.no_grad():
            layers = [(torch.stack([mlp.layers[i].weight.t() for mlp in mlps]).contiguous(),
                       torch.stack([mlp.layers[i].bias for mlp in mlps])[:, None, :].contiguous())
                      for i in range(mlps[0].num_layers)]
        cached = (versions, layers)
        decoder.__dict__[_HYPER_ATTR] = cached
    return cached[1]


def _hypernetworks(decoder, mask_tokens: torch.Tensor) -> torch.Tensor:
    """Each mask token through its own MLP, all MLPs as one batched product per layer.

    mask_tokens: (B, M, E) -> (B, M, C) with C the upscaled channels (stock: a
    Python loop of M small MLPs; same maths).
    """
    x = mask_tokens.transpose(0, 1)  # (M, B, E)
    layers = _stacked_hypernetworks(decoder)
    for i, (weight, bias) in enumerate(layers):
        x = torch.baddbmm(bias, x, weight)
        if i < len(layers) - 1:
            x = F.relu(x)
    return x.transpose(0, 1)


def _decoder_predict_masks(self, image_embeddings, image_pe, sparse_prompt_embeddings,
                           dense_prompt_embeddings):
    """MaskDecoder.predict_masks with the image side shared across prompts and cached per image.

    Stock code repeats the (1, 256, 64, 64) embedding and positional encoding
    once per prompt before the two-way transformer. When the dense prompt is
    the same for every prompt (no mask input), the first layer sees identical
    image tokens for all prompts, so its image-side projections are computed
    once per image and kept (``_ImageSideCache``); the image tokens become
    per-prompt only after the first image->token attention. With mask
    inputs it runs the stock batch layout. Same maths as stock either way.
    """
    output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.unsqueeze(0).expand(sparse_prompt_embeddings.size(0), -1, -1)
    tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)
    n = tokens.shape[0]
    _, c, h, w = image_embeddings.shape
    key_pe = _tokens(image_pe)
    dense = dense_prompt_embeddings
    shared = image_embeddings.shape[0] == 1 and _same_for_all_prompts(dense)
    side = None
    if shared and dense.stride(-1) == dense.stride(-2) == 0:  # no mask input: one vector everywhere
        side = self._samclip_image_side.get(self.transformer.layers[0], image_embeddings, image_pe, dense)
        keys, keys_pe = side.keys, side.keys_pe
    else:
        if shared:
            keys = _tokens(image_embeddings + dense[:1])
        else:
            keys = _tokens(torch.repeat_interleave(image_embeddings, n, dim=0) + dense)
        keys_pe = keys + key_pe
    hs, keys = _two_way_transformer(self.transformer, keys, keys_pe, key_pe, tokens, side)
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1:(1 + self.num_mask_tokens), :]
    # (n, h*w, c) tokens are an NCHW tensor in channels-last memory: no transpose copy
    src = keys.expand(n, -1, -1).reshape(n, h, w, c).permute(0, 3, 1, 2)
    upscaled = self.output_upscaling(src)
    hyper_in = _hypernetworks(self, mask_tokens_out)
    _, c, h, w = upscaled.shape
    pixels = upscaled.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view when channels-last
    masks = (pixels @ hyper_in.transpose(1, 2)).permute(0, 2, 1).reshape(n, -1, h, w)
    return masks, self.iou_prediction_head(iou_token_out)


def _memoized_dense_pe(self) -> torch.Tensor:
    """PromptEncoder.get_dense_pe computed once: (1, E, 64, 64) in channels-last memory.

    The positional encoding depends only on the encoder's fixed random
    Gaussian matrix; the same tensor object each call also keys the decoder's
    image-side cache. Callers must not modify it.
    """
    pe = self.__dict__.get(_PE_ATTR)
    gaussian = self.pe_layer.positional_encoding_gaussian_matrix
    if pe is None or pe[0] is not gaussian or pe[1] != _version(gaussian):
        value = type(self).get_dense_pe(self).contiguous(memory_format=torch.channels_last)
        pe = (gaussian, _version(gaussian), value)
        self.__dict__[_PE_ATTR] = pe
    return pe[2]


def _postprocess_masks(self, masks: torch.Tensor, input_size, original_size) -> torch.Tensor:
    """Sam.postprocess_masks, upsampling only the low-res rows/columns that cover the image.

    masks: (B, K, 256, 256) logits; input_size: (h, w) of the resized image inside the
    1024 square; original_size: (H, W). Stock upsamples the whole 256 grid to 1024x1024,
    crops (h, w) and resizes to (H, W). Bilinear upsampling by the same factor 4 of the
    first ceil(h/4)+1 rows (and columns) gives the same values for every output row
    below h (the crop never reaches the clamped last row), so the result is identical
    while the padding below/right of the image is never upsampled.
    """
    factor = self.image_encoder.img_size // masks.shape[-1]
    rows = min(masks.shape[-2], -(-int(input_size[0]) // factor) + 1)
    cols = min(masks.shape[-1], -(-int(input_size[1]) // factor) + 1)
    up = F.interpolate(masks[..., :rows, :cols], (rows * factor, cols * factor), mode="bilinear",
                       align_corners=False)
    up = up[..., :input_size[0], :input_size[1]]
    return F.interpolate(up, tuple(original_size), mode="bilinear", align_corners=False)


def _decoder_modules(decoder):
    """A mask decoder's attention and LayerNorm2d modules (patched by accelerate_sam)."""
    from segment_anything.modeling.common import LayerNorm2d
    from segment_anything.modeling.transformer import Attention

    attn = [m for m in decoder.modules() if isinstance(m, Attention)]
    norms = [m for m in decoder.modules() if isinstance(m, LayerNorm2d)]
    return attn, norms


def _image_encoder_attention_modules(sam):
    from segment_anything.modeling.image_encoder import Attention

    return [m for m in sam.image_encoder.modules() if isinstance(m, Attention)]


def is_accelerated(sam) -> bool:
    """True when ``accelerate_sam`` has patched this SAM module."""
    return hasattr(sam.image_encoder, _FAST_ATTR)


def fast_dtype(sam) -> torch.dtype:
    """Compute dtype of an accelerated SAM (float32 for a stock one)."""
    return getattr(sam.image_encoder, _FAST_ATTR, torch.float32)


def _restore_mask_decoder(decoder) -> None:
    """Undo _accelerate_mask_decoder: stock forwards and float32 weights."""
    attn, norms = _decoder_modules(decoder)
    for module in (decoder, *attn, *norms, decoder.output_upscaling):
        for name in ("forward", "predict_masks", _FAST_ATTR, _SIDE_ATTR, _HYPER_ATTR):
            module.__dict__.pop(name, None)
    decoder.float()


def _restore(sam) -> None:
    """Undo accelerate_sam: stock forwards and float32 weights, no batch decoder."""
    mlps, linears = _fused_linear_modules(sam)
    for module in (sam.image_encoder, *_image_encoder_attention_modules(sam),
                   *getattr(sam.image_encoder, "blocks", ()), *mlps, *linears):
        module.__dict__.pop("forward", None)
        module.__dict__.pop(_FAST_ATTR, None)
        module.__dict__.pop(_STREAM_ATTR, None)
    _restore_mask_decoder(sam.mask_decoder)
    sam._modules.pop(BATCH_DECODER, None)
    for name in ("get_dense_pe", _PE_ATTR):
        sam.prompt_encoder.__dict__.pop(name, None)
    sam.__dict__.pop("postprocess_masks", None)
    if is_tinyvit(sam):
        restore_encoder(sam.image_encoder)
    sam.image_encoder.float()


def accelerate_sam(sam, device=None, *, enable: bool = True, dtype: Optional[torch.dtype] = None,
                   decoder_dtype: Optional[torch.dtype] = torch.float32, fp32_residual: bool = True,
                   encoder: Optional[str] = None, batch_decoder_dtype: Optional[torch.dtype] = None):
    """Make a segment_anything ``Sam`` fast in place and return the same module.

    device: where the model lives/should go (default: where it already is).
    enable: False restores the stock forwards and float32 parameters (weights that were
        held in bf16/fp16 keep that rounding; load a fresh module for bit-exact stock).
    dtype: override the image encoder's precision (default ``best_dtype(device)``).
    decoder_dtype: the mask decoder's precision; float32 by default: on a 2-core
        AMX CPU the folded float32 decoder is faster than a bf16 one (17.1 vs 24.8
        ms per click, ``bench_sam.bench_click``), and bf16 flips ~1% of mask pixels
        when logits sit near zero (untrained weights). None means the same as ``dtype``
        (worth trying on a GPU).
    fp32_residual: keep the encoder's residual stream, LayerNorms and neck in
        float32 while attention and MLPs compute in ``dtype`` (costs ~0.1 s on
        vit_b; halves the encoder's deviation from the float32 reference).
    encoder: the image-encoder family, "vit" | "tinyvit" (``SamVariant.encoder`` in
        core.sam.variants), which picks the encoder's fast path; None: read from the module.
    batch_decoder_dtype: the precision of batches of prompts (automatic masks) when it
        differs from ``decoder_dtype``: a second fast copy of the mask decoder in that dtype
        becomes ``sam.batch_mask_decoder`` (a submodule; ``core.sam.automask.batch_decoder``); None: no copy,
        batches use ``sam.mask_decoder`` (on a 2-core AMX CPU bf16 pays off for batches,
        2.2 vs 3.4 s for vit_t's 16x16 grid, but not for one click; core.sam.precision).

    Contract: ``image_encoder``, ``prompt_encoder`` and ``mask_decoder`` still
    take float32 tensors and return float32 tensors; the prompt encoder stays
    float32 (a few points; its Fourier features need the precision).
    """
    if device is not None:
        sam.to(device)
    dev = sam.pixel_mean.device
    _restore(sam)
    if not enable:
        return sam
    dtype = best_dtype(dev) if dtype is None else dtype
    decoder_dtype = dtype if decoder_dtype is None else decoder_dtype
    for value in (dtype, decoder_dtype, batch_decoder_dtype or decoder_dtype):
        if value not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"unsupported SAM compute dtype {value}; use float32, bfloat16 or float16")
    if dev.type == "cpu":
        set_threads()
    sam.eval()
    if (encoder or ("tinyvit" if is_tinyvit(sam) else "vit")) == "tinyvit":
        accelerate_encoder(sam.image_encoder, dtype)
    else:
        _accelerate_vit_encoder(sam, dev, dtype, fp32_residual)
    if batch_decoder_dtype is not None and batch_decoder_dtype != decoder_dtype:
        setattr(sam, BATCH_DECODER, fast_decoder_copy(sam.mask_decoder, batch_decoder_dtype))
    _accelerate_decoder(sam, dev, decoder_dtype)
    return sam


# ------------------------------------------------------------ timing a precision
def _copy_module(module):
    """A deep copy of `module` whose hooks keep pointing at the same owners (e.g. the
    segmenter's `ClickPriority`, which holds locks and cannot be copied)."""
    memo = {}
    for sub in module.modules():
        for hook in (*sub._forward_pre_hooks.values(), *sub._forward_hooks.values()):
            owner = getattr(hook, "__self__", None)
            if owner is not None:
                memo[id(owner)] = owner
    return copy.deepcopy(module, memo)


def _vit_probe(encoder, side: int):
    """A copy of a ViT image encoder cut to its first windowed and first global block, taking a
    (1, 3, side, side) input (positional embedding cropped to the smaller token grid)."""
    blocks, pos = encoder.blocks, encoder.pos_embed
    keep = sorted({next((i for i, b in enumerate(blocks) if b.window_size > 0), 0),
                   next((i for i, b in enumerate(blocks) if b.window_size == 0), 0)})
    encoder.blocks, encoder.pos_embed = torch.nn.ModuleList([blocks[i] for i in keep]), None
    try:
        probe = _copy_module(encoder)   # only the kept blocks are copied
    finally:
        encoder.blocks, encoder.pos_embed = blocks, pos
    if pos is not None:
        grid = side // encoder.patch_embed.proj.kernel_size[0]
        probe.pos_embed = torch.nn.Parameter(pos[:, :grid, :grid].detach().clone(), requires_grad=False)
    return probe


def encoder_seconds(sam, encoder: str, precision: str, *, side: Optional[int] = None, repeats: int = 2) -> float:
    """Seconds of one fast-path pass of a probe of ``sam``'s image encoder in ``precision``.

    encoder: "vit" | "tinyvit" (``SamVariant.encoder``); precision: "fp32" | "bf16" | "fp16".
    The probe is small so that timing costs little: a (1, 3, side, side) input (default 448
    for a ViT, exactly 2 x 2 windows of 14 tokens; 512 for TinyViT); for a ViT only its first
    windowed and first global block. One warm-up pass, then the best of
    ``repeats``. ``sam`` itself is not modified (the probe is a copy).
    """
    dtype = PRECISIONS[precision]
    dev = sam.pixel_mean.device
    side = side or (512 if encoder == "tinyvit" else 448)
    if encoder == "tinyvit":
        probe = _copy_module(sam.image_encoder)
        accelerate_encoder(probe, dtype)
    else:
        probe = _vit_probe(sam.image_encoder, side)
        _accelerate_vit_encoder(types.SimpleNamespace(image_encoder=probe), dev, dtype, True)
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0)).to(dev)
    with torch.inference_mode():
        probe(x)
        times = []
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            probe(x)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            times.append(time.perf_counter() - start)
    return min(times)


class DecoderProbe:
    """Times fast copies of ``sam``'s prompt encoder + mask decoder per workload and precision.

    workloads: {name: prompts per call}, e.g. {"click": 1, "batch": 2}; each call decodes that
    many positive points (fixed random positions in the 1024 frame, multimask_output=True) on
    a fixed random (1, 256, 64, 64) embedding. ``seconds`` runs one warm-up call, then the
    median of ``repeats``, and keeps the last outputs for ``agrees``. ``sam`` is not modified.
    """

    def __init__(self, sam, workloads: dict, *, repeats: int = 5, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.sam, self.repeats, self.dev = sam, max(1, repeats), sam.pixel_mean.device
        self.embedding = torch.randn(1, 256, 64, 64, generator=gen).to(self.dev)
        size = float(sam.image_encoder.img_size)
        self.points = {name: (torch.rand(n, 1, 2, generator=gen) * size).to(self.dev) for name, n in workloads.items()}
        self._decoders: dict = {}
        self._outputs: dict = {}

    def _decoder(self, precision: str):
        if precision not in self._decoders:
            self._decoders[precision] = fast_decoder_copy(self.sam.mask_decoder, PRECISIONS[precision])
        return self._decoders[precision]

    def _decode(self, decoder, prompts):
        coords, labels, pe = prompts
        sparse, dense = self.sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        masks, iou = decoder(image_embeddings=self.embedding, image_pe=pe, sparse_prompt_embeddings=sparse,
                             dense_prompt_embeddings=dense, multimask_output=True)
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
        return masks, iou

    def seconds(self, workload: str, precision: str) -> float:
        """Median seconds of one call of ``workload`` ("click", "batch", ...) in ``precision``."""
        decoder = self._decoder(precision)
        coords = self.points[workload]
        with torch.inference_mode():
            prompts = (coords, torch.ones(coords.shape[:2], dtype=torch.int64, device=self.dev),
                       self.sam.prompt_encoder.get_dense_pe())
            out = self._decode(decoder, prompts)
            times = []
            for _ in range(self.repeats):
                start = time.perf_counter()
                out = self._decode(decoder, prompts)
                times.append(time.perf_counter() - start)
        self._outputs[workload, precision] = out
        return statistics.median(times)

    def agrees(self, workload: str, precision: str = "bf16", reference: str = "fp32") -> bool:
        """``decoder_outputs_agree`` for the outputs of ``workload`` in ``precision`` vs ``reference``."""
        for name in (reference, precision):
            if (workload, name) not in self._outputs:
                self.seconds(workload, name)
        return decoder_outputs_agree(self._outputs[workload, reference], self._outputs[workload, precision])


#: Agreement of a mask decoder's outputs with float32 (``decoder_outputs_agree``).
IOU_ATOL, IOU_RTOL = 0.02, 0.05
LOGIT_MARGIN = 0.05
SIGN_AGREEMENT = 0.999


def decoder_outputs_agree(reference, output) -> bool:
    """True when a decoder's outputs (masks (B, K, 256, 256) logits, iou (B, K)) match ``reference``.

    Predicted IoUs within ``IOU_ATOL + IOU_RTOL * |ref|`` (as tests/sam check bf16), and the
    low-res logits' signs (the masks) agree on at least ``SIGN_AGREEMENT`` of the pixels whose
    reference logit is not near 0: ``|ref| > LOGIT_MARGIN * max |ref|`` per mask (bf16 flips
    signs of near-zero logits; those pixels are left out).
    """
    ref_masks, ref_iou = (t.float() for t in reference)
    masks, iou = (t.float() for t in output)
    if masks.shape != ref_masks.shape or iou.shape != ref_iou.shape:
        return False
    if not bool(((iou - ref_iou).abs() <= IOU_ATOL + IOU_RTOL * ref_iou.abs()).all()):
        return False
    scale = ref_masks.abs().amax(dim=(-2, -1), keepdim=True)
    clear = ref_masks.abs() > LOGIT_MARGIN * scale
    same = (masks > 0) == (ref_masks > 0)
    return float(same[clear].float().mean()) >= SIGN_AGREEMENT if bool(clear.any()) else True


def _accelerate_vit_encoder(sam, dev: torch.device, dtype: torch.dtype, fp32_residual: bool) -> None:
    """accelerate_sam's part for segment_anything's ImageEncoderViT (see the module docstring)."""
    for module in _image_encoder_attention_modules(sam):
        module.forward = types.MethodType(_encoder_attention_forward, module)
    encoder = sam.image_encoder
    encoder.to(dtype)
    setattr(encoder, _FAST_ATTR, dtype)
    setattr(encoder, _STREAM_ATTR, torch.float32 if fp32_residual else dtype)
    if fp32_residual and dtype != torch.float32:
        encoder.neck.float()
        for blk in encoder.blocks:
            blk.norm1.float()
            blk.norm2.float()
            blk.forward = types.MethodType(_encoder_block_forward, blk)
    if dev.type == "cpu" and dtype == torch.bfloat16 and fused_linear_supported(dtype):
        mlps, linears = _fused_linear_modules(sam)
        for module in mlps:
            module.forward = types.MethodType(_fused_mlp_forward, module)
        for module in linears:
            module.forward = types.MethodType(_fused_linear_forward, module)
    sam.image_encoder.forward = types.MethodType(_encoder_forward, sam.image_encoder)


def _accelerate_decoder(sam, dev: torch.device, decoder_dtype: torch.dtype) -> None:
    """accelerate_sam's part for the prompt encoder, mask decoder and postprocessing (any encoder)."""
    sam.prompt_encoder.get_dense_pe = types.MethodType(_memoized_dense_pe, sam.prompt_encoder)
    sam.postprocess_masks = types.MethodType(_postprocess_masks, sam)
    _accelerate_mask_decoder(sam.mask_decoder, dev, decoder_dtype)


def _accelerate_mask_decoder(decoder, dev: torch.device, dtype: torch.dtype) -> None:
    """Patch a (float32, stock) MaskDecoder in place: folded attention, cached image side, ``dtype`` inside."""
    decoder.predict_masks = types.MethodType(_decoder_predict_masks, decoder)
    setattr(decoder, _SIDE_ATTR, _ImageSideCache())
    upscaling = decoder.output_upscaling
    if dev.type == "cpu" and _is_upscaling_with_gelu(upscaling) and fused_conv_transpose_supported(dtype):
        upscaling.forward = types.MethodType(_fused_upscaling_forward, upscaling)
    attn, norms = _decoder_modules(decoder)
    for module in attn:
        module.forward = types.MethodType(_decoder_attention_forward, module)
    for module in norms:
        module.forward = types.MethodType(_layernorm2d_forward, module)
    if dtype != torch.float32:
        decoder.to(dtype)
        setattr(decoder, _FAST_ATTR, dtype)
        decoder.forward = types.MethodType(_decoder_forward, decoder)


def fast_decoder_copy(decoder, dtype: torch.dtype):
    """A copy of ``decoder`` (a MaskDecoder, stock or fast; float32 in and out) on the fast path in
    ``dtype``. The original is not modified; weights are copied from its current values."""
    dev = next(decoder.parameters()).device
    copied = _copy_module(decoder)
    _restore_mask_decoder(copied)
    _accelerate_mask_decoder(copied, dev, dtype)
    return copied
