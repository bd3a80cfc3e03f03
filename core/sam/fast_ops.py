"""What the SAM fast paths share: the base of the fast classes and the fused oneDNN ops.

A fast class (`FastModule`) is a subclass of the stock ``segment_anything`` (or
``core.sam.tinyvit``) class it replaces: it holds the very same parameter, buffer and child
objects as the stock module it was built from (no copy), computes the same function faster,
and declares in ``FAST_STATE`` the few attributes of its own (caches, dtypes) that the stock
class does not have. ``core.sam.fast_sam.fast_classes()`` is the one table from stock class to
fast class; `adopt` is how both directions are built.
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class FastOptions:
    """How one part of SAM ("encoder" or "decoder") runs on the fast path.

    dtype: the compute dtype of its GEMMs/convolutions; stream_dtype: the ViT encoder's
    residual stream (float32 when fp32_residual); device_type: "cpu" | "cuda" | ...
    """

    part: str
    dtype: torch.dtype
    device_type: str = "cpu"
    stream_dtype: torch.dtype = torch.float32

    @property
    def fused_linear(self) -> bool:
        """GEMMs with fused bias/GELU through oneDNN: CPU, bfloat16, where the op runs here."""
        return self.device_type == "cpu" and self.dtype == torch.bfloat16 and fused_linear_supported(self.dtype)

    @property
    def fused_conv_transpose(self) -> bool:
        """Transposed convolution with a fused GELU through oneDNN (CPU, where it runs here)."""
        return self.device_type == "cpu" and fused_conv_transpose_supported(self.dtype)


class FastModule(nn.Module):
    """Base of the fast classes. Subclasses also inherit from the stock class they replace.

    ``accepts(stock, options)``: whether this fast class applies to that stock module (default
    yes); ``from_stock(stock, options, children)``: the fast module sharing ``stock``'s
    parameters, buffers and hooks, with ``children`` (name -> module) as its children;
    ``setup(options)``: fills the fast-only attributes named in ``FAST_STATE``.
    """

    FAST_STATE: tuple = ()

    @classmethod
    def accepts(cls, stock: nn.Module, options: FastOptions) -> bool:
        return True

    @classmethod
    def from_stock(cls, stock: nn.Module, options: FastOptions, children: Optional[dict] = None):
        fast = adopt(cls, stock, children)
        fast.setup(options)
        return fast

    def setup(self, options: FastOptions) -> None:
        """Prepare the fast-only state (nothing by default)."""


def adopt(cls: type, module: nn.Module, children: Optional[dict] = None, drop: tuple = ()) -> nn.Module:
    """A new ``cls`` instance holding ``module``'s parameters, buffers, hooks and attributes (the
    same objects: no tensor is copied), with ``children`` replacing its children, without the
    attributes or children named in ``drop``. ``module`` itself is not changed."""
    new = cls.__new__(cls)
    state = {k: v for k, v in module.__dict__.items() if k not in drop}
    for key, value in state.items():
        if key.startswith("_") and isinstance(value, (dict, set)):
            state[key] = value.copy()   # the registries (_parameters, _modules, hooks...): own dicts
    modules = state["_modules"]
    modules.update(children or {})
    for name in drop:
        modules.pop(name, None)
    new.__dict__.update(state)
    return new


def copy_module(module: nn.Module) -> nn.Module:
    """A deep copy of `module` whose hooks keep pointing at the same owners (e.g. the
    segmenter's `ClickPriority`, which holds locks and cannot be copied)."""
    memo = {}
    for sub in module.modules():
        for hook in (*sub._forward_pre_hooks.values(), *sub._forward_hooks.values()):
            owner = getattr(hook, "__self__", None)
            if owner is not None:
                memo[id(owner)] = owner
    return copy.deepcopy(module, memo)


# ------------------------------------------------------------------ fused oneDNN ops
@functools.lru_cache(maxsize=8)
def fused_linear_supported(dtype: torch.dtype) -> bool:
    """True when oneDNN's fused linear op (``torch.ops.mkldnn._linear_pointwise``) runs here.

    Checked once per dtype on a small CPU problem against ``F.linear`` and exact
    (erf) ``F.gelu``; any error or mismatch means the plain ops are used.
    """
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(*shape, generator=gen).to(dtype) for shape in ((2, 5, 64), (96, 64), (96,)))
        ref = F.linear(x.float(), w.float(), b.float())
        plain = op(x, w, b, "none", [], "").float()
        gelu = op(x, w, b, "gelu", [], "none").float()
        tol = 0.02 * float(ref.abs().max())
        return (plain.shape == ref.shape and float((plain - ref).abs().max()) <= tol
                and float((gelu - F.gelu(ref)).abs().max()) <= tol)
    except Exception:  # pragma: no cover - depends on the torch build
        return False


def fused_linear(linear: nn.Linear, x: torch.Tensor, gelu: bool = False) -> torch.Tensor:
    """linear(x) (then exact GELU) through oneDNN: bias added in the GEMM, GELU applied to the
    float32 accumulators before rounding to the weights' dtype."""
    if gelu:
        return torch.ops.mkldnn._linear_pointwise(x, linear.weight, linear.bias, "gelu", [], "none")
    return torch.ops.mkldnn._linear_pointwise(x, linear.weight, linear.bias, "none", [], "")


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
            out = conv_transpose_gelu(conv, x).float()
        return out.shape == ref.shape and float((out - ref).abs().max()) <= 0.02 * float(ref.abs().max())
    except Exception:  # pragma: no cover - depends on the torch build
        return False


def conv_transpose_gelu(conv: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """GELU(conv(x)) for an nn.ConvTranspose2d in one oneDNN call (exact erf GELU as a post-op)."""
    return torch.ops.mkldnn._convolution_transpose_pointwise(
        x, conv.weight, conv.bias, list(conv.padding), list(conv.output_padding), list(conv.stride),
        list(conv.dilation), conv.groups, "gelu", [], "none")


def version(t: torch.Tensor) -> Optional[int]:
    """t's in-place modification counter, or None for inference tensors (which have none)."""
    try:
        return t._version
    except RuntimeError:
        return None
