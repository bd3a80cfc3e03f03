"""Fast classes for segment_anything's ViT image encoder (SAM vit_b / vit_l / vit_h, the test SAM).

Same function as the stock modules, computed with less time:

* attention runs through ``torch.nn.functional.scaled_dot_product_attention`` (SDPA), with
  SAM's decomposed relative-position terms folded into augmented queries and keys
  (``q' = [q * scale, rel_h, rel_w]``, ``k' = [k, onehot(row), onehot(col)]`` so
  ``q' . k' = scale * q . k + rel_h[row(k)] + rel_w[col(k)]``, exactly the stock score)
  instead of materialising and adding the broadcast bias;
* the encoder keeps its tokens contiguous (stock code carries a channel-strided view through
  all blocks, so every LayerNorm/Linear copies);
* the encoder computes in its dtype (bfloat16 where the CPU has native support) with float32
  in and out, and, by default, a float32 residual stream, LayerNorms and neck;
* on CPUs in bfloat16, GEMMs run through oneDNN with the bias and the MLP's GELU fused.

``FAST_CLASSES`` maps each stock class to its fast class (``core.sam.fast_sam`` merges it into
the one table).
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import MLPBlock
from segment_anything.modeling.image_encoder import (Attention, Block, ImageEncoderViT, window_partition,
                                                     window_unpartition)
from torch import nn

from core.sam.fast_ops import FastModule, FastOptions, fused_linear


# ------------------------------------------------------------------ fused attention maths
def _rel_pos_table(size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative-position embeddings for query/key positions of one axis: (size, size, C), [q, k].

    Same as segment_anything's ``get_rel_pos(size, size, rel_pos)`` (square attention, so no
    coordinate rescaling), including its linear interpolation when the table was trained for
    another size.
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


def fused_rel_pos_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                            rel_pos_h: Optional[torch.Tensor], rel_pos_w: Optional[torch.Tensor],
                            hw: Tuple[int, int]) -> torch.Tensor:
    """softmax(scale * q k^T + rel_h + rel_w) v through SDPA, without the (N, N) bias tensor.

    q, k, v: (..., N, C), any leading dims and strides, N = h*w tokens in row-major order.
    rel_pos_h/w: SAM's (2h-1, C) / (2w-1, C) tables, or None for plain attention. Returns
    (..., N, C) in q's dtype (a view into a wider buffer). The relative terms ride along as
    extra query/key channels (queries carry ``rel_h``/``rel_w`` of their position, keys a
    one-hot of their row and column); q, k and v are written once into zero-padded buffers of
    a common width so SDPA's fused kernels apply.
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


# ------------------------------------------------------------------ the fast classes
class FastEncoderAttention(FastModule, Attention):
    """Equals ``segment_anything.modeling.image_encoder.Attention``: multi-head self-attention with
    decomposed relative positions over (B, H, W, C) tokens -> (B, H, W, C).

    Computed through SDPA with the relative terms folded into the queries and keys
    (`fused_rel_pos_attention`); qkv and proj run through oneDNN with the bias fused when
    ``fused`` (CPU, bfloat16).
    """

    FAST_STATE = ("fused",)

    def setup(self, options: FastOptions) -> None:
        self.fused = options.fused_linear

    def _linear(self, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return fused_linear(layer, x) if self.fused else layer(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self._linear(self.qkv, x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, N, C) strided views, copied once in the attention
        if self.use_rel_pos:
            out = fused_rel_pos_attention(q, k, v, self.scale, self.rel_pos_h, self.rel_pos_w, (h, w))
        else:
            out = fused_rel_pos_attention(q, k, v, self.scale, None, None, (h, w))
        return self._linear(self.proj, out.permute(0, 2, 1, 3).reshape(b, h, w, -1))


class FastMLP(FastModule, MLPBlock):
    """Equals ``segment_anything.modeling.common.MLPBlock`` with an exact GELU: lin2(GELU(lin1(x))).

    lin1 and its GELU are one oneDNN call (GELU applied to the GEMM's float32 accumulators
    before rounding: one rounding fewer), lin2 another. Used only where that op runs (CPU,
    bfloat16, image encoder); elsewhere the stock module stays.
    """

    @classmethod
    def accepts(cls, stock: nn.Module, options: FastOptions) -> bool:
        act = getattr(stock, "act", None)
        return (options.part == "encoder" and options.fused_linear and isinstance(act, nn.GELU)
                and act.approximate == "none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_linear(self.lin2, fused_linear(self.lin1, x, gelu=True))


class FastEncoderBlock(FastModule, Block):
    """Equals ``segment_anything.modeling.image_encoder.Block`` (pre-norm windowed/global attention
    and MLP with residuals), with a higher-precision residual stream.

    x: (B, H, W, C) in the stream dtype (float32 by default); LayerNorms run in that dtype,
    attention and MLP each in its own weights' dtype, and their outputs are added back in the
    stream dtype, so rounding does not accumulate over the blocks. In float32 it is the stock
    computation.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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


class FastViTEncoder(FastModule, ImageEncoderViT):
    """Equals ``segment_anything.modeling.image_encoder.ImageEncoderViT``: (B, 3, S, S) float32 ->
    (B, 256, S/16, S/16) float32.

    Computes in ``compute_dtype`` inside (its parameters are cast to it; with a float32
    ``stream_dtype`` the residual stream, LayerNorms and neck stay float32) and makes the tokens
    contiguous once after the patch embedding (stock carries a channel-strided view through all
    blocks, so every LayerNorm and Linear copies its input).
    """

    FAST_STATE = ("compute_dtype", "stream_dtype")

    def setup(self, options: FastOptions) -> None:
        self.compute_dtype, self.stream_dtype = options.dtype, options.stream_dtype
        self.to(options.dtype)
        if self.stream_dtype != options.dtype:
            self.neck.float()
            for blk in self.blocks:
                blk.norm1.float()
                blk.norm2.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x.to(self.patch_embed.proj.weight.dtype)).to(self.stream_dtype)
        if self.pos_embed is not None:
            x = x + self.pos_embed.to(self.stream_dtype)
        x = x.contiguous()
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.permute(0, 3, 1, 2).to(self.neck[0].weight.dtype)).float()


#: Stock class -> fast class for the ViT encoder family.
FAST_CLASSES = {ImageEncoderViT: FastViTEncoder, Block: FastEncoderBlock, Attention: FastEncoderAttention,
                MLPBlock: FastMLP}
