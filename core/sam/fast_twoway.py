"""The mask decoder's two-way transformer on the fast path: SAM's maths, re-associated.

Cross-attention between the few prompt tokens and the 4096 image tokens folds the image
side's projections into the token side (`fold_keys_attention`, `fold_queries_attention`:
2.3x fewer multiply-adds for SAM's 8 heads, 7 tokens, 128 internal channels), and the first
layer's image-side projections are computed once per image (`ImageSideCache`). Used by
``core.sam.fast_decoder.FastMaskDecoder`` and ``FastDecoderAttention``; ``attn`` arguments are
``segment_anything.modeling.transformer.Attention`` modules (stock or fast).
"""
from __future__ import annotations

import collections
import threading
import weakref
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from core.sam.fast_ops import version

#: Attention layers of the mask decoder with fewer than this many keys (or queries) on both sides
#: (token self-attention) use the plain projections; folding pays off against image tokens.
FOLD_MIN_TOKENS = 64


def _batched_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(Ba, n, k) @ (Bb, k, m) with Ba or Bb equal to 1 broadcast; a shared side is one wide GEMM."""
    if a.shape[0] == b.shape[0]:
        return a @ b
    if a.shape[0] == 1:  # one left matrix against many right ones: (n, k) @ (k, Bb*m)
        bb, k, m = b.shape
        return (a[0] @ b.permute(1, 0, 2).reshape(k, bb * m)).reshape(-1, bb, m).transpose(0, 1)
    return a @ b[0]


def fold_keys_attention(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Few queries against many keys (tokens -> image) without projecting the keys and values.

    q: (B, Nq, E); k, v: (B or 1, Nk, E) with Nk >> Nq. Per head h the score
    ``(W_q q + b_q)_h . (W_k k + b_k)_h`` equals ``[(W_q q + b_q)_h W_k,h] . k``
    plus a per-query constant that softmax ignores, and since each query's
    weights sum to 1, ``sum_i a_i (W_v v_i + b_v) = W_v (sum_i a_i v_i) + b_v``.
    So the key/value projections (2 Nk E I multiply-adds) become products
    with H*Nq folded query rows (2 Nk E H Nq); same maths, re-associated.
    """
    b, nq, _ = q.shape
    heads, e = attn.num_heads, k.shape[-1]
    d = attn.internal_dim // heads
    qh = attn.q_proj(q).view(b, nq, heads, d)
    folded = torch.einsum("bnhd,hde->bhne", qh, attn.k_proj.weight.view(heads, d, e)) * d ** -0.5
    scores = _batched_matmul(folded.reshape(b, heads * nq, e), k.transpose(1, 2))
    context = _batched_matmul(scores.softmax(dim=-1), v).view(b, heads, nq, e)
    out = torch.einsum("bhne,hde->bnhd", context, attn.v_proj.weight.view(heads, d, e))
    return attn.out_proj(out.reshape(b, nq, heads * d) + attn.v_proj.bias)


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


def fold_queries_attention(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Many queries against few keys (image -> tokens) without projecting queries or outputs.

    q: (B or 1, Nq, E) with Nq >> Nk; k, v: (B, Nk, E). See ``_folded_image_weights``
    and ``_image_update``: both Nq x E x I projections become products with H*Nk
    folded columns. Same maths, re-associated.
    """
    return _image_update(attn, _folded_image_weights(attn, q, k), v)


def tokens_of(t: torch.Tensor) -> torch.Tensor:
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


class ImageSideCache:
    """A few recent images' first-layer projections, keyed by the embedding and PE tensors.

    An entry is used only while both tensors are alive (weak references), unchanged
    (same version counter, where torch tracks one: inference-mode tensors have none
    and are taken as immutable) and the dense prompt is the same broadcast vector.
    """

    def __init__(self, size: int = 4):
        self.size = size
        self._entries: "collections.OrderedDict[tuple, tuple]" = collections.OrderedDict()
        self._lock = threading.Lock()

    def __deepcopy__(self, memo) -> "ImageSideCache":
        """A copy of a module gets an empty cache of the same size (entries hold this model's
        projections; the lock cannot be copied)."""
        return ImageSideCache(self.size)

    def get(self, layer, image_embeddings, image_pe, dense) -> _ImageSide:
        """The _ImageSide for (1, E, h, w) embeddings + (1, E, 1, 1)-broadcast dense prompt and PE."""
        key = (id(image_embeddings), version(image_embeddings), id(image_pe), version(image_pe))
        vector = dense[0, :, 0, 0]
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                emb_ref, pe_ref, cached_vector, side = entry
                if emb_ref() is image_embeddings and pe_ref() is image_pe and torch.equal(cached_vector, vector):
                    self._entries.move_to_end(key)
                    return side
        keys = tokens_of(image_embeddings + dense[:1])
        side = _image_side(layer, keys, keys + tokens_of(image_pe))
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


def two_way_transformer(transformer, keys, keys_pe, key_pe, tokens, side: Optional[_ImageSide] = None):
    """TwoWayTransformer forward on token-major tensors: keys/keys_pe/key_pe (B or 1, N, E), tokens (B, T, E).

    Returns (queries (B, T, E), keys (B or 1, N, E)) like the stock module.
    """
    queries = tokens
    for i, layer in enumerate(transformer.layers):
        queries, keys, keys_pe = _two_way_block(layer, queries, keys, keys_pe, tokens, key_pe,
                                                side if i == 0 else None)
    attn_out = transformer.final_attn_token_to_image(q=queries + tokens, k=keys_pe, v=keys)
    return transformer.norm_final_attn(queries + attn_out), keys
