"""Fast SAM inference on CPU (and GPU) without changing what SAM computes.

``accelerate_sam(sam)`` returns a SAM whose modules are replaced by fast classes, each a named
subclass of the stock class it replaces that computes the same function faster and holds the
very same parameters (no copy):

* the image encoder: per encoder family (``core.sam.variants.EncoderFamily.fast_classes``):
  ``core.sam.fast_vit`` for segment_anything's ViT, ``core.sam.fast_tinyvit`` for TinyViT;
* the prompt encoder, mask decoder and mask upsampling: ``core.sam.fast_decoder``.

`fast_classes()` is the one table from stock class to fast class; turning the fast path off
(`restore_sam`, ``accelerate_sam(sam, enable=False)``) swaps every fast module back to the
stock class the same table maps to it. The image encoder (and, on request, the mask decoder)
runs in the device's best precision (bfloat16 on CPUs with AVX512-BF16/AMX and on GPUs that
support it, float16 on older GPUs, float32 elsewhere), casting inside so callers keep passing
and receiving float32 tensors; torch uses as many threads as this process may run on. The
switch users see is ``core.models.load_sam(fast=False)``, a stock module.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from core import config
from core.sam import fast_decoder
from core.sam.cpu import cpu_supports_bf16, set_threads
from core.sam.fast_ops import FastModule, FastOptions, adopt, copy_module
from core.sam.variants import encoder_families

# --------------------------------------------------------------------- precision names
#: The precision names of ``config.SAM_PRECISIONS`` -> the dtype they stand for (None: "auto").
PRECISIONS = dict(zip(config.SAM_PRECISIONS, (None, torch.float32, torch.bfloat16, torch.float16)))
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def best_dtype(device=None) -> torch.dtype:
    """The precision ``device``'s capability flags suggest ("cpu", "cuda", "cuda:0", torch.device).

    CPU: bfloat16 where the CPU supports it natively (``core.sam.cpu``), else float32 (a flag is
    not speed: ``core.models.load_sam``'s "auto" measures on such CPUs, see core.sam.precision).
    CUDA: bfloat16 where the GPU supports it, else float16. Anything else: float32.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dev.type == "cpu":
        return torch.bfloat16 if cpu_supports_bf16() else torch.float32
    return torch.float32


def parse_precision(name: str) -> Optional[torch.dtype]:
    """ "auto" | "fp32" | "bf16" | "fp16" -> the dtype for ``accelerate_sam`` (None = best_dtype)."""
    key = str(name).strip().lower()
    if key not in PRECISIONS:
        raise ValueError(f"unknown SAM precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    return PRECISIONS[key]


def precision_name(dtype: torch.dtype) -> str:
    """Short name of a dtype for reports: "bf16", "fp16" or "fp32"."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))


# --------------------------------------------------------------------- the table
def fast_classes() -> dict:
    """The one table: stock module class -> fast class (``core.sam.fast_ops.FastModule``), for
    the parts every SAM shares and every registered encoder family."""
    table = dict(fast_decoder.FAST_CLASSES)
    for family in encoder_families():
        table.update(family.fast_classes())
    return table


def stock_classes() -> dict:
    """The same table read backwards: fast class -> the stock class it replaces."""
    return {fast: stock for stock, fast in fast_classes().items()}


def _swap(module: nn.Module, pick: Callable[[nn.Module, str], Optional[Callable]], path: str = "") -> nn.Module:
    """``module`` with every submodule for which ``pick(module, path)`` names a builder rebuilt by
    it (children first); parents of rebuilt children are shallow copies holding the new children.
    The input tree is not changed (its parameters are shared with the result)."""
    children = {name: child if child is None else _swap(child, pick, f"{path}.{name}" if path else name)
                for name, child in module._modules.items()}
    build = pick(module, path)
    if build is not None:
        return build(module, children)
    if all(children[name] is child for name, child in module._modules.items()):
        return module
    return adopt(type(module), module, children)


def convert(module: nn.Module, options_for: Callable[[str], FastOptions]) -> nn.Module:
    """``module`` with each submodule whose class is in `fast_classes()` (and that the fast class
    accepts under ``options_for(dotted path)``) replaced by its fast class."""
    table = fast_classes()

    def pick(sub, path):
        fast, options = table.get(type(sub)), options_for(path)
        if fast is None or not fast.accepts(sub, options):
            return None
        return lambda stock, children: fast.from_stock(stock, options, children)

    return _swap(module, pick)


def restore(module: nn.Module) -> nn.Module:
    """``module`` with every fast submodule swapped back to its stock class (`stock_classes()`),
    without the fast-only state (``FAST_STATE``); parameters keep their current dtype."""
    table = stock_classes()

    def pick(sub, path):
        stock = table.get(type(sub))
        if stock is None:
            return None
        return lambda fast, children: adopt(stock, fast, children, drop=type(fast).FAST_STATE)

    return _swap(module, pick)


def _part(path: str) -> str:
    """Which options a submodule of Sam gets: "encoder", "decoder" or "prompt" (the rest)."""
    top = path.split(".", 1)[0]
    return {"image_encoder": "encoder", "mask_decoder": "decoder"}.get(top, "prompt")


# --------------------------------------------------------------------- switching
def is_accelerated(sam) -> bool:
    """True when ``sam`` is a fast SAM (``accelerate_sam``'s result)."""
    return isinstance(sam, FastModule)


def fast_dtype(sam) -> torch.dtype:
    """Compute dtype of an accelerated SAM's image encoder (float32 for a stock one)."""
    return getattr(sam.image_encoder, "compute_dtype", torch.float32)


def restore_sam(sam):
    """The stock SAM behind ``sam`` (``sam`` itself when it is stock): stock classes, float32
    image encoder and mask decoder, no batch decoder (weights held in bf16/fp16 keep that rounding)."""
    if not any(isinstance(m, FastModule) for m in sam.modules()):
        return sam
    stock = restore(sam)
    stock.image_encoder.float()
    stock.mask_decoder.float()
    return stock


def accelerate_encoder(encoder: nn.Module, dtype: torch.dtype, *, fp32_residual: bool = True) -> nn.Module:
    """A stock image encoder (any registered family) on the fast path in ``dtype``."""
    dev = next(encoder.parameters()).device
    options = FastOptions("encoder", dtype, dev.type, torch.float32 if fp32_residual else dtype)
    return convert(encoder, lambda path: options)


def fast_decoder_copy(decoder, dtype: torch.dtype):
    """A copy of ``decoder`` (a MaskDecoder, stock or fast; float32 in and out) on the fast path in
    ``dtype``. The original is not modified; weights are copied from its current values."""
    dev = next(decoder.parameters()).device
    stock = restore(copy_module(decoder)).float()
    return convert(stock, lambda path: FastOptions("decoder", dtype, dev.type))


def accelerate_sam(sam, device=None, *, enable: bool = True, dtype: Optional[torch.dtype] = None,
                   decoder_dtype: Optional[torch.dtype] = torch.float32, fp32_residual: bool = True,
                   batch_decoder_dtype: Optional[torch.dtype] = None):
    """A fast SAM computing what segment_anything's ``Sam`` ``sam`` computes; returns it.

    The result shares ``sam``'s parameters (cast in place to the compute dtypes): use the
    result, not ``sam``, afterwards. device: where the model lives/should go (default: where it
    already is). enable: False returns the stock SAM (`restore_sam`; weights that were held in
    bf16/fp16 keep that rounding; load a fresh module for bit-exact stock).
    dtype: the image encoder's precision (default ``best_dtype(device)``).
    decoder_dtype: the mask decoder's precision; float32 by default: on a 2-core AMX CPU the
        folded float32 decoder is faster than a bf16 one (17.1 vs 24.8 ms per click,
        ``bench_sam.bench_click``), and bf16 flips ~1% of mask pixels when logits sit near
        zero (untrained weights). None means the same as ``dtype`` (worth trying on a GPU).
    fp32_residual: keep the ViT encoder's residual stream, LayerNorms and neck in float32 while
        attention and MLPs compute in ``dtype`` (costs ~0.1 s on vit_b; halves the encoder's
        deviation from the float32 reference).
    batch_decoder_dtype: the precision of batches of prompts (automatic masks) when it differs
        from ``decoder_dtype``: a second fast copy of the mask decoder in that dtype becomes
        ``sam.batch_mask_decoder`` (``core.sam.automask.batch_decoder``); None: no copy.

    Contract: ``image_encoder``, ``prompt_encoder`` and ``mask_decoder`` still take float32
    tensors and return float32 tensors; the prompt encoder stays float32.
    """
    if device is not None:
        sam.to(device)
    dev = sam.pixel_mean.device
    sam = restore_sam(sam)
    if not enable:
        return sam
    dtype = best_dtype(dev) if dtype is None else dtype
    decoder_dtype = dtype if decoder_dtype is None else decoder_dtype
    for value in (dtype, decoder_dtype, batch_decoder_dtype or decoder_dtype):
        if value not in _DTYPES:
            raise ValueError(f"unsupported SAM compute dtype {value}; use float32, bfloat16 or float16")
    if dev.type == "cpu":
        set_threads()
    sam.eval()
    batch = None
    if batch_decoder_dtype is not None and batch_decoder_dtype != decoder_dtype:
        batch = fast_decoder_copy(sam.mask_decoder, batch_decoder_dtype)
    options = {"encoder": FastOptions("encoder", dtype, dev.type, torch.float32 if fp32_residual else dtype),
               "decoder": FastOptions("decoder", decoder_dtype, dev.type),
               "prompt": FastOptions("prompt", torch.float32, dev.type)}
    fast = convert(sam, lambda path: options[_part(path)])
    if batch is not None:
        fast.batch_mask_decoder = batch
    return fast
