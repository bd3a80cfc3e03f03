"""Small pieces shared by the SAM and TinyViT fast paths (core.sam.fast_sam, core.sam.fast_tinyvit).

Kept apart so that the two fast paths import it one way instead of importing each other.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F

#: Attribute set on an accelerated module: the dtype its fast path computes in.
_FAST_ATTR = "_samclip_fast_dtype"


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


def _version(t: torch.Tensor) -> Optional[int]:
    """t's in-place modification counter, or None for inference tensors (which have none)."""
    try:
        return t._version
    except RuntimeError:
        return None
