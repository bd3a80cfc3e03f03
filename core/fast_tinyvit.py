"""Fast forward for the TinyViT SAM encoder (``core.tinyvit``): same maths, less time.

``accelerate_encoder(encoder, dtype)`` replaces the encoder's forward (called by
``core.fast_sam.accelerate_sam``; ``restore_encoder`` undoes it). Against
``TinyViTImageEncoder.forward`` it changes how, not what, is computed:

* every conv + BatchNorm pair is folded into one convolution ("plan" of
  prepared weights, built once and rebuilt when a parameter changes);
* activations stay channels-last end to end: tokens (B, H, W, C) are the same
  memory as a channels-last (B, C, H, W) image, so the reference's
  token <-> image transposes cost nothing; 1x1 convolutions run as GEMMs;
* the convolutional stem, the MBConv stage, the patch mergings and every
  block's depthwise conv + MLP run in bands of rows (a one-row halo for the
  3x3 convolutions), so the 4x-expanded hidden tensors (67 MB at 256x256x256)
  never exist whole: bands stay in cache and no large buffers are allocated
  (fresh 67 MB allocations cost Linux page faults comparable to the maths);
* GELU is fused into the GEMM / convolution before it (oneDNN post-ops) where
  a probe shows the op runs and matches here; residual adds happen in place;
* windowed attention is computed per band of windows with the learned offset
  bias as a precomputed (heads, L, L) tensor added by the score GEMM
  (``baddbmm``); padded edge tokens are LayerNorm(0) = the norm's bias, exactly
  as in the reference, so they are written as that vector instead of normalised;
* GEMMs and convolutions run in ``dtype`` (bfloat16 where the CPU has native
  support, see ``core.fast_sam.best_dtype``), the residual stream, LayerNorms
  and output in float32.

Input (B, 3, S, S) float32, output (B, 256, S/16, S/16) float32 in channels-last
memory (what ``core.fast_sam``'s decoder reads without a copy).
"""
from __future__ import annotations

import functools
import types
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F

from core.fast_sam import _FAST_ATTR, _version, fused_linear_supported

_PLAN_ATTR = "_samclip_tinyvit_plan"
#: Target tokens per band (rows x width) for the banded stages; ~2k keeps a band's
#: widest intermediate (4x channels) within a few MB.
BAND_TOKENS = 2048


# --------------------------------------------------------------------- probes
@functools.lru_cache(maxsize=8)
def fused_conv_supported(dtype: torch.dtype) -> bool:
    """True when oneDNN's convolution with a GELU post-op (``mkldnn._convolution_pointwise``) runs and matches."""
    op = getattr(torch.ops.mkldnn, "_convolution_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1, 8, 6, 7, generator=gen).to(dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(8, 1, 3, 3, generator=gen).to(dtype)
        b = torch.randn(8, generator=gen).to(dtype)
        ref = F.gelu(F.conv2d(x.float(), w.float(), b.float(), 1, (0, 1), 1, 8))
        out = op(x, w, b, [0, 1], [1, 1], [1, 1], 8, "gelu", [], "none").float()
        return out.shape == ref.shape and float((out - ref).abs().max()) <= 0.02 * float(ref.abs().max())
    except Exception:  # pragma: no cover - depends on the torch build
        return False


# --------------------------------------------------------------------- the plan
@dataclass
class _Ops:
    """The kernels a plan runs with: fused oneDNN ops on CPU where probed, plain torch ops elsewhere."""

    dtype: torch.dtype
    fused_linear: bool
    fused_conv: bool

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], gelu: bool = False):
        """x (N, I) @ weight (O, I)^T + bias, GELU applied when asked; in self.dtype."""
        x = x.to(self.dtype)
        if self.fused_linear:
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu" if gelu else "none", [],
                                                      "none" if gelu else "")
        y = F.linear(x, weight, bias)
        return F.gelu(y) if gelu else y

    def conv(self, x: torch.Tensor, conv: "_Conv", padding: Tuple[int, int], gelu: bool = False):
        """conv(x) (+GELU) for a channels-last (B, C, H, W) input, explicit (row, col) padding."""
        x = x.to(self.dtype)
        if self.fused_conv:
            return torch.ops.mkldnn._convolution_pointwise(
                x, conv.weight, conv.bias, list(padding), [conv.stride, conv.stride], [1, 1], conv.groups,
                "gelu" if gelu else "none", [], "none" if gelu else "")
        y = F.conv2d(x, conv.weight, conv.bias, conv.stride, padding, 1, conv.groups)
        return F.gelu(y) if gelu else y


@dataclass
class _Conv:
    """A conv-BN folded into one convolution: weight (O, I/groups, k, k) channels-last, bias (O,)."""

    weight: torch.Tensor
    bias: torch.Tensor
    stride: int
    groups: int

    @property
    def matrix(self) -> torch.Tensor:
        """A 1x1 convolution's weight as a (O, I) matrix."""
        return self.weight.reshape(self.weight.shape[0], -1)


@dataclass
class _PwDwPw:
    """1x1 conv, GELU, 3x3 depthwise conv (stride s), GELU, 1x1 conv: MBConv (residual=True,
    then GELU) and patch merging (residual=False)."""

    expand: _Conv
    depthwise: _Conv
    project: _Conv
    residual: bool


@dataclass
class _Block:
    """One TinyViT block's prepared weights (see ``core.tinyvit.TinyViTBlock``)."""

    window: int
    heads: int
    scale: float
    norm1: Tuple[torch.Tensor, torch.Tensor, float]
    qkv_w: torch.Tensor
    qkv_b: torch.Tensor
    attn_bias: torch.Tensor  # (heads, L, L) float32
    proj_w: torch.Tensor
    proj_b: torch.Tensor
    local: _Conv
    norm2: Tuple[torch.Tensor, torch.Tensor, float]
    fc1_w: torch.Tensor
    fc1_b: torch.Tensor
    fc2_w: torch.Tensor
    fc2_b: torch.Tensor


@dataclass
class _Plan:
    """Everything the fast forward needs, derived from the module's parameters."""

    key: tuple
    ops: _Ops
    stem: Tuple[_Conv, _Conv]
    stages: List[Tuple[list, Optional[_PwDwPw]]] = field(default_factory=list)
    neck: tuple = ()


def _fold(convbn, dtype: torch.dtype) -> _Conv:
    weight, bias = convbn.fused_weight_bias()
    conv = convbn.c
    return _Conv(weight.to(dtype).contiguous(memory_format=torch.channels_last), bias.to(dtype).contiguous(),
                 conv.stride[0], conv.groups)


def _norm(ln) -> Tuple[torch.Tensor, torch.Tensor, float]:
    return ln.weight.float(), ln.bias.float(), ln.eps


def _pw_dw_pw(unit, residual: bool, dtype) -> _PwDwPw:
    return _PwDwPw(_fold(unit.conv1, dtype), _fold(unit.conv2, dtype), _fold(unit.conv3, dtype), residual)


def _block(blk, dtype) -> _Block:
    attn, mlp = blk.attn, blk.mlp
    cast = lambda t: t.detach().to(dtype).contiguous()  # noqa: E731
    return _Block(blk.window_size, attn.num_heads, attn.scale, _norm(attn.norm), cast(attn.qkv.weight),
                  cast(attn.qkv.bias), attn.bias().detach().float().contiguous(), cast(attn.proj.weight),
                  cast(attn.proj.bias), _fold(blk.local_conv, dtype), _norm(mlp.norm), cast(mlp.fc1.weight),
                  cast(mlp.fc1.bias), cast(mlp.fc2.weight), cast(mlp.fc2.bias))


def _plan_key(encoder, dtype) -> tuple:
    tensors = list(encoder.parameters()) + list(encoder.buffers())
    return (dtype,) + tuple((t.data_ptr(), _version(t)) for t in tensors)


def _build_plan(encoder, dtype: torch.dtype) -> _Plan:
    device = encoder.neck[0].weight.device
    on_cpu = device.type == "cpu"
    ops = _Ops(dtype, on_cpu and fused_linear_supported(dtype), on_cpu and fused_conv_supported(dtype))
    with torch.no_grad():
        seq = encoder.patch_embed.seq
        plan = _Plan(_plan_key(encoder, dtype), ops, (_fold(seq[0], dtype), _fold(seq[2], dtype)))
        for layer in encoder.layers:
            if hasattr(layer.blocks[0], "attn"):
                units = [_block(blk, dtype) for blk in layer.blocks]
            else:
                units = [_pw_dw_pw(blk, True, dtype) for blk in layer.blocks]
            merge = None if layer.downsample is None else _pw_dw_pw(layer.downsample, False, dtype)
            plan.stages.append((units, merge))
        conv1, norm1, conv2, norm2 = encoder.neck
        plan.neck = (conv1.weight.detach().reshape(conv1.out_channels, -1).to(dtype).contiguous(),
                     (norm1.weight.float(), norm1.bias.float(), norm1.eps),
                     _Conv(conv2.weight.detach().to(dtype).contiguous(memory_format=torch.channels_last),
                           None, 1, 1),
                     (norm2.weight.float(), norm2.bias.float(), norm2.eps))
    return plan


def plan_of(encoder) -> _Plan:
    """The encoder's current plan, rebuilt when a parameter was replaced or modified in place."""
    dtype = getattr(encoder, _FAST_ATTR)
    plan = encoder.__dict__.get(_PLAN_ATTR)
    if plan is None or plan.key != _plan_key(encoder, dtype):
        plan = _build_plan(encoder, dtype)
        encoder.__dict__[_PLAN_ATTR] = plan
    return plan


# --------------------------------------------------------------------- banded convolutions
Rows = Callable[[int, int], torch.Tensor]  # (i0, i1) -> rows [i0, i1) of a (B, C, H, W) channels-last map


def _band_size(width: int, stride: int = 1) -> int:
    return max(1, BAND_TOKENS // max(1, width * stride))


def conv3x3_rows(source: Rows, height: int, o0: int, o1: int, conv: _Conv, ops: _Ops, gelu: bool):
    """Output rows [o0, o1) of a 3x3 convolution (padding 1, conv.stride) over an input of `height` rows.

    ``source(i0, i1)`` produces the input rows it needs (one halo row above and
    below, fewer at the image edges, where zero rows stand in for the padding).
    Returns (B, O, o1 - o0, W_out) channels-last.
    """
    s = conv.stride
    want0, want1 = o0 * s - 1, (o1 - 1) * s + 2
    i0, i1 = max(want0, 0), min(want1, height)
    rows = source(i0, i1)
    if want0 < i0 or want1 > i1:
        rows = F.pad(rows, (0, 0, i0 - want0, want1 - i1))
    return ops.conv(rows, conv, (0, 1), gelu)


def _map_rows(x: torch.Tensor) -> Rows:
    """A Rows source over a whole (B, C, H, W) tensor."""
    return lambda i0, i1: x[:, :, i0:i1]


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) channels-last -> (B, H, W, C) contiguous view."""
    return x.permute(0, 2, 3, 1)


def _nchw(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) contiguous -> (B, C, H, W) channels-last view."""
    return x.permute(0, 3, 1, 2)


def stem(x: torch.Tensor, convs: Tuple[_Conv, _Conv], ops: _Ops) -> torch.Tensor:
    """Patch embedding: (B, 3, S, S) -> (B, S/4, S/4, C) NHWC, two stride-2 convs with GELU between, banded."""
    first, second = convs
    x = x.contiguous(memory_format=torch.channels_last)
    height = (x.shape[2] - 1) // first.stride + 1
    hidden: Rows = lambda i0, i1: conv3x3_rows(_map_rows(x), x.shape[2], i0, i1, first, ops, gelu=True)  # noqa: E731
    out_h = (height - 1) // second.stride + 1
    out_w = (x.shape[3] - 1) // (first.stride * second.stride) + 1
    out = x.new_empty(x.shape[0], out_h, out_w, second.weight.shape[0])
    band = _band_size(out_w)
    for o0 in range(0, out_h, band):
        o1 = min(o0 + band, out_h)
        out[:, o0:o1] = _nhwc(conv3x3_rows(hidden, height, o0, o1, second, ops, gelu=False))
    return out


def pw_dw_pw(x: torch.Tensor, unit: _PwDwPw, ops: _Ops) -> torch.Tensor:
    """An MBConv or a patch merging on (B, H, W, C) NHWC float32 -> (B, H', W', C') NHWC float32, banded."""
    b, h, w, c = x.shape
    expand = unit.expand.matrix

    def hidden(i0: int, i1: int) -> torch.Tensor:
        y = ops.linear(x[:, i0:i1].reshape(-1, c), expand, unit.expand.bias, gelu=True)
        return _nchw(y.view(b, i1 - i0, w, -1))

    s = unit.depthwise.stride
    out_h, out_w = (h - 1) // s + 1, (w - 1) // s + 1
    out = x.new_empty(b, out_h, out_w, unit.project.weight.shape[0])
    band = _band_size(out_w)
    for o0 in range(0, out_h, band):
        o1 = min(o0 + band, out_h)
        mid = _nhwc(conv3x3_rows(hidden, h, o0, o1, unit.depthwise, ops, gelu=True))
        y = ops.linear(mid.reshape(-1, mid.shape[-1]), unit.project.matrix, unit.project.bias).float()
        y = y.view(b, o1 - o0, out_w, -1)
        if unit.residual:
            y = F.gelu(y.add_(x[:, o0:o1]))
        out[:, o0:o1] = y
    return out


# --------------------------------------------------------------------- attention blocks
def _windows(t: torch.Tensor, window: int, fill: torch.Tensor) -> torch.Tensor:
    """(B, h, w, C) -> (B * nh * nw, window^2, C): windows row-major, padded at bottom/right with `fill` (C,)."""
    b, h, w, c = t.shape
    ph, pw = -(-h // window) * window, -(-w // window) * window
    if (ph, pw) != (h, w):
        grid = t.new_empty(b, ph, pw, c)
        grid[:, :h, :w] = t
        grid[:, h:] = fill
        grid[:, :h, w:] = fill
        t = grid
    t = t.view(b, ph // window, window, pw // window, window, c).transpose(2, 3)
    return t.reshape(-1, window * window, c)


def _unwindow(t: torch.Tensor, b: int, h: int, w: int, window: int) -> torch.Tensor:
    """Inverse of ``_windows`` (padding dropped): (N, window^2, C) -> (B, h, w, C)."""
    nh, nw = -(-h // window), -(-w // window)
    t = t.view(b, nh, nw, window, window, -1).transpose(2, 3).reshape(b, nh * window, nw * window, -1)
    return t[:, :h, :w]


def window_attention_(x: torch.Tensor, blk: _Block, ops: _Ops) -> None:
    """x += windowed attention(x) in place, band by band; x: (B, H, W, C) float32 contiguous.

    Per band of window rows: LayerNorm of the real tokens, padding tokens set
    to the norm's bias (LayerNorm of the zero padding), qkv for all window
    tokens, softmax(q k^T * scale + bias) v per head, output projection added to x.
    """
    b, h, w, c = x.shape
    win, heads = blk.window, blk.heads
    d = c // heads
    length = win * win
    weight, beta, eps = blk.norm1
    fill = beta.to(ops.dtype)
    band = max(1, _band_size(w * win)) * win
    for y0 in range(0, h, band):
        y1 = min(y0 + band, h)
        rows = x[:, y0:y1]
        normed = F.layer_norm(rows, (c,), weight, beta, eps).to(ops.dtype)
        win_tokens = _windows(normed, win, fill)
        n = win_tokens.shape[0]
        qkv = ops.linear(win_tokens.reshape(-1, c), blk.qkv_w, blk.qkv_b).view(n, length, heads, 3, d)
        q, k, v = qkv.permute(3, 0, 2, 1, 4).unbind(0)  # (n, heads, L, d) strided views
        q = q.reshape(n * heads, length, d)
        k = k.reshape(n * heads, length, d)
        v = v.reshape(n * heads, length, d)
        bias = blk.attn_bias.to(ops.dtype).expand(n, heads, length, length).reshape(n * heads, length, length)
        scores = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=blk.scale).softmax(dim=-1)
        context = torch.bmm(scores, v).view(n, heads, length, d).transpose(1, 2).reshape(n, length, c)
        merged = _unwindow(context, b, y1 - y0, w, win).reshape(-1, c)
        out = ops.linear(merged, blk.proj_w, blk.proj_b)
        rows.add_(out.view(rows.shape))


def conv_mlp(x: torch.Tensor, blk: _Block, ops: _Ops) -> torch.Tensor:
    """The block's second half: t = depthwise conv(x); t + MLP(t). (B, H, W, C) float32 -> new tensor, banded."""
    b, h, w, c = x.shape
    out = x.new_empty(x.shape)
    source = _map_rows(_nchw(x))
    weight, beta, eps = blk.norm2
    band = _band_size(w)
    for o0 in range(0, h, band):
        o1 = min(o0 + band, h)
        t = _nhwc(conv3x3_rows(source, h, o0, o1, blk.local, ops, gelu=False)).float()
        tokens = out[:, o0:o1].view(-1, c)
        tokens.copy_(t.reshape(-1, c))
        hidden = ops.linear(F.layer_norm(tokens, (c,), weight, beta, eps), blk.fc1_w, blk.fc1_b, gelu=True)
        tokens.add_(ops.linear(hidden, blk.fc2_w, blk.fc2_b))
    return out


def neck(x: torch.Tensor, parts: tuple, ops: _Ops) -> torch.Tensor:
    """SAM's neck on (B, h, w, C) NHWC tokens -> (B, 256, h, w) float32 channels-last."""
    proj, (w1, b1, eps1), conv, (w2, b2, eps2) = parts
    b, h, w, c = x.shape
    y = ops.linear(x.reshape(-1, c), proj, None).float().view(b, h, w, -1)
    y = F.layer_norm(y, (y.shape[-1],), w1, b1, eps1)
    y = _nhwc(ops.conv(_nchw(y), conv, (1, 1))).float()
    y = F.layer_norm(y, (y.shape[-1],), w2, b2, eps2)
    return _nchw(y)


def fast_forward(self, x: torch.Tensor) -> torch.Tensor:
    """TinyViTImageEncoder forward through the plan: (B, 3, S, S) float32 -> (B, 256, S/16, S/16) float32.

    Images of a batch run one after the other (bands are contiguous row ranges of one image).
    """
    plan = plan_of(self)
    if x.shape[0] != 1:
        return torch.cat([_forward_one(plan, image[None]) for image in x])
    return _forward_one(plan, x)


def _forward_one(plan: _Plan, x: torch.Tensor) -> torch.Tensor:
    """The fast forward of one image (1, 3, S, S)."""
    ops = plan.ops
    x = stem(x.to(ops.dtype), plan.stem, ops).float()
    for units, merge in plan.stages:
        for unit in units:
            if isinstance(unit, _PwDwPw):
                x = pw_dw_pw(x, unit, ops)
            else:
                window_attention_(x, unit, ops)
                x = conv_mlp(x, unit, ops)
        if merge is not None:
            x = pw_dw_pw(x, merge, ops)
    return neck(x, plan.neck, ops)


def accelerate_encoder(encoder, dtype: torch.dtype) -> None:
    """Switch a TinyViTImageEncoder to the fast forward in `dtype` (parameters stay as they are)."""
    setattr(encoder, _FAST_ATTR, dtype)
    encoder.__dict__.pop(_PLAN_ATTR, None)
    encoder.forward = types.MethodType(fast_forward, encoder)


def restore_encoder(encoder) -> None:
    """Undo ``accelerate_encoder``: the exact module forward, no plan."""
    for name in ("forward", _FAST_ATTR, _PLAN_ATTR):
        encoder.__dict__.pop(name, None)
