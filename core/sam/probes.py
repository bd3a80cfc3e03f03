"""Timing probes of SAM's fast path, and the check that a faster precision still agrees.

`encoder_seconds` times a small copy of the image encoder (its family's probe, registered in
``core.sam.variants``); `DecoderProbe` times fast copies of the mask decoder per workload;
`decoder_outputs_agree` says whether a precision's decoder outputs match float32's.
``core.models.sam_precision_choice`` feeds them to ``core.sam.precision``. The model passed in
is never modified (every probe is a copy).
"""
from __future__ import annotations

import statistics
import time
from typing import Optional

import torch

from core.sam.fast_ops import copy_module
from core.sam.fast_sam import PRECISIONS, accelerate_encoder, fast_decoder_copy
from core.sam.variants import encoder_family


def whole_encoder_probe(encoder, side: int):
    """A copy of the whole image encoder (TinyViT: cheap enough to time as it is)."""
    return copy_module(encoder)


def vit_probe(encoder, side: int):
    """A copy of a ViT image encoder cut to its first windowed and first global block, taking a
    (1, 3, side, side) input (positional embedding cropped to the smaller token grid)."""
    blocks, pos = encoder.blocks, encoder.pos_embed
    keep = sorted({next((i for i, b in enumerate(blocks) if b.window_size > 0), 0),
                   next((i for i, b in enumerate(blocks) if b.window_size == 0), 0)})
    encoder.blocks, encoder.pos_embed = torch.nn.ModuleList([blocks[i] for i in keep]), None
    try:
        probe = copy_module(encoder)   # only the kept blocks are copied
    finally:
        encoder.blocks, encoder.pos_embed = blocks, pos
    if pos is not None:
        grid = side // encoder.patch_embed.proj.kernel_size[0]
        probe.pos_embed = torch.nn.Parameter(pos[:, :grid, :grid].detach().clone(), requires_grad=False)
    return probe


def encoder_seconds(sam, encoder: str, precision: str, *, side: Optional[int] = None, repeats: int = 2) -> float:
    """Seconds of one fast-path pass of a probe of ``sam``'s image encoder in ``precision``.

    encoder: the family name (``SamVariant.encoder``), whose registered probe and input side
    (``EncoderFamily.probe`` / ``probe_side``) are used unless ``side`` is given; precision:
    "fp32" | "bf16" | "fp16". One warm-up pass, then the best of ``repeats``. ``sam`` itself is
    not modified (the probe is a copy).
    """
    family = encoder_family(encoder)
    dev = sam.pixel_mean.device
    side = side or family.probe_side
    probe = accelerate_encoder(family.probe(sam.image_encoder, side), PRECISIONS[precision])
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
