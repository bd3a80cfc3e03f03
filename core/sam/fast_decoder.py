"""Fast classes for SAM's prompt encoder, mask decoder and mask upsampling (every SAM variant).

Same function as the stock modules (float32 by default, exact maths re-associated):

* the mask decoder shares the image tokens across a batch of prompts instead of copying the
  embedding once per prompt, computes the first layer's image-side projections once per image
  (`ImageSideCache`), folds the image-side projections of its cross-attentions into the few
  prompt tokens (2.3x fewer multiply-adds; `FastDecoderAttention`, `core.sam.fast_twoway`),
  batches the four hypernetwork MLPs and fuses the upscaling's last GELU (`FastUpscaling`);
* the prompt encoder computes its dense positional encoding once (`FastPromptEncoder`);
* ``Sam.postprocess_masks`` upsamples only the rows/columns that cover the image (`FastSam`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.transformer import Attention
from torch import nn

from core.sam.fast_ops import FastModule, FastOptions, conv_transpose_gelu, version
from core.sam.fast_twoway import (FOLD_MIN_TOKENS, ImageSideCache, fold_keys_attention, fold_queries_attention,
                                  tokens_of, two_way_transformer)


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """t in dtype; a batch-broadcast tensor (stride 0 on dim 0) is cast once and re-expanded."""
    if t.dtype == dtype:
        return t
    if t.dim() > 0 and t.shape[0] > 1 and t.stride(0) == 0:
        return t[:1].to(dtype).expand(t.shape)
    return t.to(dtype)


def _same_for_all_prompts(t: torch.Tensor) -> bool:
    """True when a (B, ...) tensor holds one value broadcast over the batch (B == 1 or stride 0)."""
    return t.shape[0] == 1 or t.stride(0) == 0


class FastDecoderAttention(FastModule, Attention):
    """Equals ``segment_anything.modeling.transformer.Attention``: multi-head attention of q (B or 1,
    Nq, E) over k/v (B or 1, Nk, E) -> (B, Nq, E).

    Cross-attention between the few prompt tokens and the 4096 image tokens folds the image
    side's projections into the token side (``fold_keys_attention`` / ``fold_queries_attention``);
    the rest runs through SDPA, a shared (batch 1) side broadcast against the other.
    """

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        nq, nk = q.shape[1], k.shape[1]
        heads = self.num_heads
        if nk >= FOLD_MIN_TOKENS and heads * nq < self.internal_dim:
            return fold_keys_attention(self, q, k, v)
        if nq >= FOLD_MIN_TOKENS and heads * nk < self.internal_dim:
            return fold_queries_attention(self, q, k, v)
        q = self._separate_heads(self.q_proj(q), heads)
        k = self._separate_heads(self.k_proj(k), heads)
        v = self._separate_heads(self.v_proj(v), heads)
        if q.shape[0] != k.shape[0]:  # shared image tokens (batch 1) against per-prompt tokens
            batch = max(q.shape[0], k.shape[0])
            q, k, v = (t.expand(batch, -1, -1, -1) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(self._recombine_heads(out))


class FastLayerNorm2d(FastModule, LayerNorm2d):
    """Equals ``segment_anything.modeling.common.LayerNorm2d`` (LayerNorm over the channels of NCHW),
    as one fused ``layer_norm`` call. Mask decoder only (the encoder neck keeps the stock one)."""

    @classmethod
    def accepts(cls, stock: nn.Module, options: FastOptions) -> bool:
        return options.part == "decoder"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class FastUpscaling(FastModule, nn.Sequential):
    """Equals the mask decoder's ``output_upscaling`` (ConvT, LayerNorm2d, GELU, ConvT, GELU):
    (B, 256, 64, 64) -> (B, 32, 256, 256), with the last GELU fused into its transposed
    convolution (one pass fewer over the decoder's largest tensor). CPU, where the op runs."""

    @classmethod
    def accepts(cls, stock: nn.Module, options: FastOptions) -> bool:
        kinds = [type(m).__name__ for m in stock]
        return (options.part == "decoder" and options.fused_conv_transpose
                and kinds in (["ConvTranspose2d", "LayerNorm2d", "GELU", "ConvTranspose2d", "GELU"],
                              ["ConvTranspose2d", "FastLayerNorm2d", "GELU", "ConvTranspose2d", "GELU"])
                and all(m.approximate == "none" for m in (stock[2], stock[4])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up1, norm, act, up2, _ = self
        return conv_transpose_gelu(up2, act(norm(up1(x))))


class FastMaskDecoder(FastModule, MaskDecoder):
    """Equals ``segment_anything.modeling.MaskDecoder``: (masks (B, K, 256, 256), iou (B, K)) float32.

    Computes in ``compute_dtype`` (parameters cast to it; float32 in and out). When the dense
    prompt is the same for every prompt (no mask input) the image tokens are shared across the
    batch and the first layer's image-side projections come from ``image_side`` (per image);
    with mask inputs it runs the stock batch layout. The hypernetwork MLPs run as one batched
    product per layer (``hypernetworks``, restacked when a parameter changes).
    """

    FAST_STATE = ("compute_dtype", "image_side", "_stacked")

    def setup(self, options: FastOptions) -> None:
        self.compute_dtype, self.image_side, self._stacked = options.dtype, ImageSideCache(), None
        if options.dtype != torch.float32:
            self.to(options.dtype)

    def forward(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                multimask_output: bool):
        if self.compute_dtype == torch.float32:
            return super().forward(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                                   multimask_output)
        args = (_cast(t, self.compute_dtype) for t in (image_embeddings, image_pe, sparse_prompt_embeddings,
                                                       dense_prompt_embeddings))
        masks, iou = super().forward(*args, multimask_output)
        return masks.float(), iou.float()

    def hypernetworks(self, mask_tokens: torch.Tensor) -> torch.Tensor:
        """Each mask token (B, M, E) through its own MLP, all M as one batched product -> (B, M, C)."""
        mlps = self.output_hypernetworks_mlps
        params = [p for mlp in mlps for p in mlp.parameters()]
        key = tuple(version(p) for p in params) + tuple(p.data_ptr() for p in params)
        if self._stacked is None or self._stacked[0] != key:
            with torch.no_grad():
                self._stacked = (key, [(torch.stack([mlp.layers[i].weight.t() for mlp in mlps]).contiguous(),
                                        torch.stack([mlp.layers[i].bias for mlp in mlps])[:, None, :].contiguous())
                                       for i in range(mlps[0].num_layers)])
        layers = self._stacked[1]
        x = mask_tokens.transpose(0, 1)  # (M, B, E)
        for i, (weight, bias) in enumerate(layers):
            x = torch.baddbmm(bias, x, weight)
            if i < len(layers) - 1:
                x = F.relu(x)
        return x.transpose(0, 1)

    def _keys(self, image_embeddings, image_pe, dense, n: int):
        """(keys, keys + PE, PE, first-layer image side or None) as token-major tensors."""
        key_pe = tokens_of(image_pe)
        shared = image_embeddings.shape[0] == 1 and _same_for_all_prompts(dense)
        if shared and dense.stride(-1) == dense.stride(-2) == 0:  # no mask input: one vector everywhere
            side = self.image_side.get(self.transformer.layers[0], image_embeddings, image_pe, dense)
            return side.keys, side.keys_pe, key_pe, side
        if shared:
            keys = tokens_of(image_embeddings + dense[:1])
        else:
            keys = tokens_of(torch.repeat_interleave(image_embeddings, n, dim=0) + dense)
        return keys, keys + key_pe, key_pe, None

    def predict_masks(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings):
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(sparse_prompt_embeddings.size(0), -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)
        n = tokens.shape[0]
        _, c, h, w = image_embeddings.shape
        keys, keys_pe, key_pe, side = self._keys(image_embeddings, image_pe, dense_prompt_embeddings, n)
        hs, keys = two_way_transformer(self.transformer, keys, keys_pe, key_pe, tokens, side)
        # (n, h*w, c) tokens are an NCHW tensor in channels-last memory: no transpose copy
        upscaled = self.output_upscaling(keys.expand(n, -1, -1).reshape(n, h, w, c).permute(0, 3, 1, 2))
        hyper_in = self.hypernetworks(hs[:, 1:(1 + self.num_mask_tokens), :])
        _, c, h, w = upscaled.shape
        pixels = upscaled.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view when channels-last
        masks = (pixels @ hyper_in.transpose(1, 2)).permute(0, 2, 1).reshape(n, -1, h, w)
        return masks, self.iou_prediction_head(hs[:, 0, :])


class FastPromptEncoder(FastModule, PromptEncoder):
    """Equals ``segment_anything.modeling.PromptEncoder``; ``get_dense_pe`` is computed once:
    (1, E, 64, 64) in channels-last memory, the same tensor each call (it keys the decoder's
    image-side cache; callers must not modify it), recomputed if the Gaussian matrix changes."""

    FAST_STATE = ("_dense_pe",)

    def setup(self, options: FastOptions) -> None:
        self._dense_pe = None

    def get_dense_pe(self) -> torch.Tensor:
        gaussian = self.pe_layer.positional_encoding_gaussian_matrix
        memo = self._dense_pe
        if memo is None or memo[0] is not gaussian or memo[1] != version(gaussian):
            value = super().get_dense_pe().contiguous(memory_format=torch.channels_last)
            memo = self._dense_pe = (gaussian, version(gaussian), value)
        return memo[2]


class FastSam(FastModule, Sam):
    """Equals ``segment_anything.modeling.Sam``; ``postprocess_masks`` upsamples only the low-res
    rows/columns that cover the image. May hold ``batch_mask_decoder``, a second fast mask
    decoder in another precision for batches of prompts (``core.sam.automask.batch_decoder``), and
    ``precision_choice``, the ``core.sam.precision.PrecisionChoice`` it was built with (None: not
    recorded)."""

    FAST_STATE = ("batch_mask_decoder", "precision_choice")
    precision_choice = None

    def postprocess_masks(self, masks: torch.Tensor, input_size, original_size) -> torch.Tensor:
        """masks: (B, K, 256, 256) logits; input_size: (h, w) of the resized image in the 1024
        square; original_size: (H, W) -> (B, K, H, W) logits, identical to stock.

        Bilinear upsampling by the same factor 4 of the first ceil(h/4)+1 rows (and columns)
        gives the same values for every output row below h (the crop never reaches the clamped
        last row), so the padding below/right of the image is never upsampled.
        """
        factor = self.image_encoder.img_size // masks.shape[-1]
        rows = min(masks.shape[-2], -(-int(input_size[0]) // factor) + 1)
        cols = min(masks.shape[-1], -(-int(input_size[1]) // factor) + 1)
        up = F.interpolate(masks[..., :rows, :cols], (rows * factor, cols * factor), mode="bilinear",
                           align_corners=False)
        up = up[..., :input_size[0], :input_size[1]]
        return F.interpolate(up, tuple(original_size), mode="bilinear", align_corners=False)


#: Stock class -> fast class for the parts every SAM shares (prompt encoder, mask decoder, Sam).
FAST_CLASSES = {Sam: FastSam, PromptEncoder: FastPromptEncoder, MaskDecoder: FastMaskDecoder,
                Attention: FastDecoderAttention, LayerNorm2d: FastLayerNorm2d, nn.Sequential: FastUpscaling}
