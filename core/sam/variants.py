"""The registry of SAM variants: adding a SAM is one `register_sam_variant` call here.

Each `SamVariant` says everything the rest of the project needs about one SAM: its name,
the words people see, a builder (returns the module with random weights; heavy imports
happen inside it), its official weight file (`SamWeights`, None for a test-only model),
its image-encoder family (picks the fast path in `core.sam.fast_sam`) and its default
precision policy. `core.models.load_sam`, `core.engine.sam_label`, the command-line help
and the benchmarks read this registry; none keeps its own list.

This module imports no torch at the top (importing the registry stays cheap).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

from core import config

#: Image-encoder families, each with its own fast path (core.sam.fast_sam / core.sam.fast_tinyvit).
ENCODER_FAMILIES = ("vit", "tinyvit")
#: Precision policies a variant may default to ("auto": decided per machine, see core.sam.precision):
#: the precision names of `config.SAM_PRECISIONS`, defined there once.
PRECISION_POLICIES = config.SAM_PRECISIONS


@dataclass(frozen=True)
class SamWeights:
    """An official SAM checkpoint: file name, source URL, checksum(s) and approximate size.

    md5: the published md5 (Meta's SAM files carry its first digits in their names).
    git_blob_sha1: for files published inside a git repository, the blob id git lists
    for the file (sha1 of b"blob <size>\\0" + content), checked the same way.
    """

    filename: str
    url: str
    md5: str | None
    size_mb: int
    git_blob_sha1: str | None = None

    @property
    def has_checksum(self) -> bool:
        """True when a download of this file can be verified (md5 or git blob id)."""
        return bool(self.md5 or self.git_blob_sha1)


@dataclass(frozen=True)
class SamVariant:
    """One SAM the project can load.

    name: the id used everywhere ("vit_b"); label: human words for choices and reports;
    builder: () -> segment_anything ``Sam`` with random (unseeded here) float32 weights;
    weights: the official checkpoint, None for a model without published weights;
    encoder: "vit" | "tinyvit", the image-encoder family (which fast path applies);
    untrained_only: True when the model can only be built with random weights (tests);
    precision: default precision policy of the fast path ("auto" = decided per machine).
    """

    name: str
    label: str
    builder: Callable[[], Any]
    weights: SamWeights | None
    encoder: str = "vit"
    untrained_only: bool = False
    precision: str = "auto"

    def __post_init__(self):
        if self.encoder not in ENCODER_FAMILIES:
            raise ValueError(f"SAM {self.name}: encoder {self.encoder!r} is not one of {ENCODER_FAMILIES}")
        if self.precision not in PRECISION_POLICIES:
            raise ValueError(f"SAM {self.name}: precision {self.precision!r} is not one of {PRECISION_POLICIES}")
        if self.weights is None and not self.untrained_only:
            raise ValueError(f"SAM {self.name}: a variant without weights must be untrained_only")


_VARIANTS: dict[str, SamVariant] = {}


def register_sam_variant(name: str, *, label: str, builder: Callable[[], Any], weights: SamWeights | None = None,
                         encoder: str = "vit", untrained_only: bool | None = None, precision: str = "auto",
                         replace: bool = False) -> SamVariant:
    """Add a SAM variant (see `SamVariant`); `untrained_only` defaults to `weights is None`.

    Raises ValueError when `name` is taken (unless `replace=True`). Returns the variant.
    """
    if name in _VARIANTS and not replace:
        raise ValueError(f"SAM variant {name!r} is already registered")
    variant = SamVariant(name, label, builder, weights, encoder,
                         weights is None if untrained_only is None else untrained_only, precision)
    _VARIANTS[name] = variant
    return variant


def sam_variant(name: str) -> SamVariant:
    """The registered variant `name`; ValueError listing the valid names otherwise."""
    try:
        return _VARIANTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown SAM model {name!r}; choose one of {sam_variant_names()}") from None


def sam_variant_names() -> list[str]:
    """All registered SAM names, in registration order."""
    return list(_VARIANTS)


# ----------------------------------------------------------------------------- builders


def _segment_anything_sam(name: str):
    """segment_anything's own builder for `name` ("vit_b" | "vit_l" | "vit_h"), random weights."""
    from segment_anything import sam_model_registry

    return sam_model_registry[name](checkpoint=None)


def _mobile_sam():
    """MobileSAM: TinyViT image encoder (core.sam.tinyvit) + SAM's prompt encoder and decoder."""
    from core.sam.tinyvit import build_sam_vit_t

    return build_sam_vit_t()


def _tiny_test_sam():
    """A small SAM (64-d, 2 blocks, 1 global) with the real prompt encoder and decoder."""
    from segment_anything.build_sam import _build_sam

    return _build_sam(encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2,
                      encoder_global_attn_indexes=[1], checkpoint=None)


_META = "https://dl.fbaipublicfiles.com/segment_anything/"

register_sam_variant(
    "vit_b", label="SAM ViT-B, as in the papers", builder=functools.partial(_segment_anything_sam, "vit_b"),
    weights=SamWeights("sam_vit_b_01ec64.pth", _META + "sam_vit_b_01ec64.pth", "01ec64d29a2fca3f0661936605ae66f8", 375))
register_sam_variant(
    "vit_l", label="SAM ViT-L", builder=functools.partial(_segment_anything_sam, "vit_l"),
    weights=SamWeights("sam_vit_l_0b3195.pth", _META + "sam_vit_l_0b3195.pth", "0b3195507c641ddb6910d2bb5adee89c", 1250))
register_sam_variant(
    "vit_h", label="SAM ViT-H", builder=functools.partial(_segment_anything_sam, "vit_h"),
    weights=SamWeights("sam_vit_h_4b8939.pth", _META + "sam_vit_h_4b8939.pth", "4b8939a88964f0f4ff5f5b2642c598a6", 2560))
# MobileSAM: no md5/sha256 is published; the file sits in the MobileSAM repository, whose
# tree at this commit lists it as git blob 7ef2d09...
register_sam_variant(
    "vit_t", label="fast (MobileSAM)", builder=_mobile_sam, encoder="tinyvit",
    weights=SamWeights("mobile_sam.pt", "https://raw.githubusercontent.com/ChaoningZhang/MobileSAM/"
                       "34bbbfdface3c18e5221aa7de6032d7220c6c6a1/weights/mobile_sam.pt",
                       None, 41, git_blob_sha1="7ef2d090979fd9853adf17b7a99c8b94a1c5a6a7"))
register_sam_variant("vit_tiny", label="tiny test SAM (untrained only)", builder=_tiny_test_sam)
