"""Fast forward for the TinyViT SAM encoder (``core.sam.tinyvit``): same maths, less time.

``FastTinyViTEncoder`` is the fast class of ``TinyViTImageEncoder`` (chosen by the table in
``core.sam.fast_sam``, which also swaps it back). Against ``TinyViTImageEncoder.forward`` it
changes how, not what, is computed:

* every conv + BatchNorm pair is folded into one convolution ("plan" of
  prepared weights, built once and rebuilt when a parameter changes);
* activations stay channels-last end to end: tokens (B, H, W, C) are the same
  memory as a channels-last (B, C, H, W) image, so the reference's
  token <-> image transposes cost nothing; 1x1 convolutions run as GEMMs;
* the convolutional stem, the MBConv stage, the patch mergings and every
  block's depthwise conv + MLP run in bands of rows (a one-row halo for the
  3x3 convolutions), so the 4x-expanded hidden tensors (67 MB at 256x256x256)
  never exist whole: bands stay in the shared cache and no 67 MB buffers are
  allocated (fresh ones cost Linux page faults comparable to the maths);
* GELU is fused into the GEMM / convolution before it and residual adds into
  the GEMM after them (oneDNN post-ops) where a probe shows the op runs and
  matches here; other residual adds happen in place;
* windowed attention runs per band of window rows with the learned offset
  bias precomputed as a (heads, L, L) tensor; the attention LayerNorm's
  gamma/beta and the query scale are folded into the qkv weights, so the
  zero-padded edge tokens still become qkv(LayerNorm(0)) = qkv(beta), exactly
  as in the reference;
* GEMMs and convolutions run in ``dtype`` (bfloat16 where the CPU has native
  support, see ``core.sam.fast_sam.best_dtype``), the residual stream, LayerNorms
  and output in float32.

Input (B, 3, S, S) float32, output (B, 256, S/16, S/16) float32 in channels-last
memory (what ``core.sam.fast_sam``'s decoder reads without a copy).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F

from core.sam.fast_ops import FastModule, FastOptions, fused_linear_supported, version
from core.sam.tinyvit import TinyViTImageEncoder

#: Target tokens per band (rows x width) for the banded stages. 8192 keeps a band's widest
#: intermediate (256 channels at 256 px wide) near 8 MB, within a shared L3. Smaller bands
#: fit L2 but multiply the op count, and on a shared 2-vCPU machine every op is a
#: two-thread barrier: in one A/B run under load (~4) medians were 4.4 s at 2048 tokens,
#: 2.3 s at 8192, 2.0 s at 16384, with the best runs 0.91 / 0.78 / 1.01 s.
BAND_TOKENS = 8192


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
    band_tokens: Optional[int] = None  # None: BAND_TOKENS (CPU); GPUs run whole maps (one band)

    def band_rows(self, width: int) -> int:
        """Rows per band for a map `width` tokens wide."""
        tokens = BAND_TOKENS if self.band_tokens is None else self.band_tokens
        return max(1, tokens // max(1, width))

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], gelu: bool = False):
        """x (N, I) @ weight (O, I)^T + bias, GELU applied when asked; in self.dtype."""
        x = x.to(self.dtype)
        if self.fused_linear:
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu" if gelu else "none", [],
                                                      "none" if gelu else "")
        y = F.linear(x, weight, bias)
        return F.gelu(y) if gelu else y

    def linear_add(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, other: torch.Tensor):
        """other + x @ weight^T + bias as float32 (N, O); other: (N, O) float32. One call where fused."""
        x = x.to(self.dtype)
        if self.fused_linear and self.dtype == torch.float32:
            return torch.ops.mkldnn._linear_pointwise.binary(x, other, weight, bias, "add")
        return F.linear(x, weight, bias).float().add_(other)

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
    bias: Optional[torch.Tensor]
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
    """One TinyViT block's prepared weights (see ``core.sam.tinyvit.TinyViTBlock``).

    qkv_w/qkv_b carry the attention LayerNorm's affine part and the query scale:
    ``qkv(LN(x)) = qkv_w @ normalise(x) + qkv_b`` with the queries already scaled,
    and a zero (padding) token maps to qkv(LN(0)) = qkv(beta), as in the reference.
    """

    window: int
    heads: int
    eps1: float
    qkv_w: torch.Tensor
    qkv_b: torch.Tensor
    attn_bias: torch.Tensor  # (heads, L, L)
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


def _folded_qkv(attn) -> Tuple[torch.Tensor, torch.Tensor]:
    """qkv weight/bias with the preceding LayerNorm's gamma/beta and the query scale folded in (float32)."""
    weight, bias = attn.qkv.weight.float(), attn.qkv.bias.float()
    gamma, beta = attn.norm.weight.float(), attn.norm.bias.float()
    folded_w, folded_b = weight * gamma, bias + weight @ beta
    scale = torch.ones(attn.num_heads, 3, attn.head_dim, dtype=torch.float32, device=weight.device)
    scale[:, 0] = attn.scale  # rows are grouped per head as [q, k, v]
    scale = scale.reshape(-1)
    return folded_w * scale[:, None], folded_b * scale


def _block(blk, dtype) -> _Block:
    attn, mlp = blk.attn, blk.mlp
    cast = lambda t: t.detach().to(dtype).contiguous()  # noqa: E731
    qkv_w, qkv_b = _folded_qkv(attn)
    return _Block(blk.window_size, attn.num_heads, attn.norm.eps, cast(qkv_w), cast(qkv_b), cast(attn.bias()),
                  cast(attn.proj.weight), cast(attn.proj.bias), _fold(blk.local_conv, dtype), _norm(mlp.norm),
                  cast(mlp.fc1.weight), cast(mlp.fc1.bias), cast(mlp.fc2.weight), cast(mlp.fc2.bias))


def _plan_key(encoder, dtype) -> tuple:
    tensors = list(encoder.parameters()) + list(encoder.buffers())
    return (dtype,) + tuple((t.data_ptr(), version(t)) for t in tensors)


def _build_plan(encoder, dtype: torch.dtype) -> _Plan:
    device = encoder.neck[0].weight.device
    on_cpu = device.type == "cpu"
    ops = _Ops(dtype, on_cpu and fused_linear_supported(dtype), on_cpu and fused_conv_supported(dtype),
               None if on_cpu else 1 << 30)
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


# --------------------------------------------------------------------- banded convolutions
Rows = Callable[[int, int], torch.Tensor]  # (i0, i1) -> rows [i0, i1) of a (B, C, H, W) channels-last map


def conv3x3_rows(source: Rows, height: int, o0: int, o1: int, conv: _Conv, ops: _Ops, gelu: bool):
    """Output rows [o0, o1) of a 3x3 convolution (padding 1, conv.stride) over an input of `height` rows.

    ``source(i0, i1)`` produces the input rows the band needs: from one stride
    above the first output's centre row (the halo) to one row below the last
    one's, clipped to the image. The convolution runs with its usual zero
    padding on that slab; outputs centred on the halo rows see a zero row
    instead of their real neighbour and are dropped. Returns (B, O, o1 - o0, W_out)
    channels-last.
    """
    s = conv.stride
    i0 = (o0 - 1) * s if o0 > 0 else 0
    i1 = min((o1 - 1) * s + 2, height)
    out = ops.conv(source(i0, i1), conv, (1, 1), gelu)
    first = (o0 * s - i0) // s
    return out[:, :, first:first + o1 - o0]


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
    """Patch embedding: (1, 3, S, S) -> (1, S/4, S/4, C) NHWC, two stride-2 convs with GELU between, banded."""
    first, second = convs
    x = x.contiguous(memory_format=torch.channels_last)
    height = (x.shape[2] - 1) // first.stride + 1
    hidden: Rows = lambda i0, i1: conv3x3_rows(_map_rows(x), x.shape[2], i0, i1, first, ops, gelu=True)  # noqa: E731
    out_h = (height - 1) // second.stride + 1
    out_w = (x.shape[3] - 1) // (first.stride * second.stride) + 1
    band = ops.band_rows(out_w)
    if band >= out_h:  # one band: the whole map
        return _nhwc(ops.conv(hidden(0, height), second, (1, 1))).float()
    out = x.new_empty(1, out_h, out_w, second.weight.shape[0])
    for o0 in range(0, out_h, band):
        o1 = min(o0 + band, out_h)
        out[:, o0:o1] = _nhwc(conv3x3_rows(hidden, height, o0, o1, second, ops, gelu=False))
    return out


def pw_dw_pw(x: torch.Tensor, unit: _PwDwPw, ops: _Ops) -> torch.Tensor:
    """An MBConv or a patch merging on (1, H, W, C) NHWC float32 -> (1, H', W', C') NHWC float32, banded."""
    _, h, w, c = x.shape
    expand = unit.expand.matrix

    def hidden(i0: int, i1: int) -> torch.Tensor:
        y = ops.linear(x[:, i0:i1].reshape(-1, c), expand, unit.expand.bias, gelu=True)
        return _nchw(y.view(1, i1 - i0, w, -1))

    s = unit.depthwise.stride
    out_h, out_w = (h - 1) // s + 1, (w - 1) // s + 1
    out = x.new_empty(1, out_h, out_w, unit.project.weight.shape[0])
    band = ops.band_rows(out_w)
    for o0 in range(0, out_h, band):
        o1 = min(o0 + band, out_h)
        mid = _nhwc(conv3x3_rows(hidden, h, o0, o1, unit.depthwise, ops, gelu=True))
        mid = mid.reshape(-1, mid.shape[-1])
        dest = out[:, o0:o1].view(-1, out.shape[-1])
        if unit.residual:
            y = ops.linear_add(mid, unit.project.matrix, unit.project.bias, x[:, o0:o1].reshape(-1, c))
            torch.ops.aten.gelu.out(y, out=dest)
        else:
            dest.copy_(ops.linear(mid, unit.project.matrix, unit.project.bias))
    return out


# --------------------------------------------------------------------- attention blocks
def _windows(t: torch.Tensor, window: int) -> torch.Tensor:
    """(1, h, w, C) -> (nh * nw, window^2, C): windows row-major, zero-padded at bottom/right."""
    _, h, w, c = t.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        t = F.pad(t, (0, 0, 0, pad_w, 0, pad_h))
    nh, nw = (h + pad_h) // window, (w + pad_w) // window
    return t.view(nh, window, nw, window, c).transpose(1, 2).reshape(nh * nw, window * window, c)


def _unwindow(t: torch.Tensor, h: int, w: int, window: int) -> torch.Tensor:
    """Inverse of ``_windows`` (padding dropped): (N, window^2, C) -> (1, h, w, C), a strided view."""
    nh, nw = -(-h // window), -(-w // window)
    t = t.view(nh, nw, window, window, -1).transpose(1, 2).reshape(1, nh * window, nw * window, -1)
    return t[:, :h, :w]


def window_attention_(x: torch.Tensor, blk: _Block, ops: _Ops) -> None:
    """x += windowed attention(x) in place, band by band; x: (1, H, W, C) float32 contiguous.

    Per band of window rows: normalise the real tokens, zero-pad and cut
    windows (a zero token becomes LayerNorm(0) = beta through the folded qkv,
    as in the reference), softmax(q k^T + offset bias) v per head, output
    projection, add back to x.
    """
    _, h, w, c = x.shape
    win, heads = blk.window, blk.heads
    d = c // heads
    length = win * win
    band = ops.band_rows(w * win) * win
    for y0 in range(0, h, band):
        y1 = min(y0 + band, h)
        rows = x[:, y0:y1]
        windows = _windows(F.layer_norm(rows, (c,), eps=blk.eps1), win)
        n = windows.shape[0]
        qkv = ops.linear(windows.view(-1, c), blk.qkv_w, blk.qkv_b).view(n, length, heads, 3, d)
        # one copy to (3, n * heads, L, d): q, k, v of every (window, head) contiguous for bmm
        q, k, v = qkv.permute(3, 0, 2, 1, 4).reshape(3, n * heads, length, d).unbind(0)
        scores = torch.bmm(q, k.transpose(1, 2)).view(n, heads, length, length).add_(blk.attn_bias)
        scores = scores.softmax(dim=-1).view(n * heads, length, length)
        context = torch.bmm(scores, v).view(n, heads, length, d).transpose(1, 2).reshape(n * length, c)
        out = ops.linear(context, blk.proj_w, blk.proj_b)
        rows.add_(_unwindow(out, y1 - y0, w, win))


def conv_mlp(x: torch.Tensor, blk: _Block, ops: _Ops) -> torch.Tensor:
    """The block's second half: t = depthwise conv(x); t + MLP(t). (1, H, W, C) float32 -> new tensor, banded."""
    _, h, w, c = x.shape
    out = x.new_empty(x.shape)
    source = _map_rows(_nchw(x))
    weight, beta, eps = blk.norm2
    band = ops.band_rows(w)
    for o0 in range(0, h, band):
        o1 = min(o0 + band, h)
        t = _nhwc(conv3x3_rows(source, h, o0, o1, blk.local, ops, gelu=False)).reshape(-1, c).float()
        hidden = ops.linear(F.layer_norm(t, (c,), weight, beta, eps), blk.fc1_w, blk.fc1_b, gelu=True)
        out[:, o0:o1].view(-1, c).copy_(ops.linear_add(hidden, blk.fc2_w, blk.fc2_b, t))
    return out


def neck(x: torch.Tensor, parts: tuple, ops: _Ops) -> torch.Tensor:
    """SAM's neck on (1, h, w, C) NHWC tokens -> (1, 256, h, w) float32 channels-last."""
    proj, (w1, b1, eps1), conv, (w2, b2, eps2) = parts
    _, h, w, c = x.shape
    y = ops.linear(x.reshape(-1, c), proj, None).float().view(1, h, w, -1)
    y = F.layer_norm(y, (y.shape[-1],), w1, b1, eps1)
    y = _nhwc(ops.conv(_nchw(y), conv, (1, 1))).float()
    y = F.layer_norm(y, (y.shape[-1],), w2, b2, eps2)
    return _nchw(y)


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


class FastTinyViTEncoder(FastModule, TinyViTImageEncoder):
    """Equals ``core.sam.tinyvit.TinyViTImageEncoder``: (B, 3, S, S) float32 -> (B, 256, S/16, S/16)
    float32 (channels-last memory), computed through a plan of prepared weights (see the module
    docstring) in ``compute_dtype``; the parameters themselves stay as they are. Images of a
    batch run one after the other (bands are contiguous row ranges of one image).
    """

    FAST_STATE = ("compute_dtype", "_plan")

    def setup(self, options: FastOptions) -> None:
        self.compute_dtype, self._plan = options.dtype, None

    def plan(self) -> _Plan:
        """The current plan, rebuilt when a parameter was replaced or modified in place."""
        if self._plan is None or self._plan.key != _plan_key(self, self.compute_dtype):
            self._plan = _build_plan(self, self.compute_dtype)
        return self._plan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self.plan()
        if x.shape[0] != 1:
            return torch.cat([_forward_one(plan, image[None]) for image in x])
        return _forward_one(plan, x)


#: Stock class -> fast class for the TinyViT encoder family.
FAST_CLASSES = {TinyViTImageEncoder: FastTinyViTEncoder}
