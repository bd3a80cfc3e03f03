"""core.sam.variants: the one registry of SAM variants that models, engine, CLI and bench read."""
from __future__ import annotations

import pytest

from core import models
from core.cli.args import sam_choices_help
from core.engine import sam_label
from core.sam import variants


@pytest.fixture
def registry(monkeypatch):
    """The registry, restored after the test (registrations made in it do not leak)."""
    monkeypatch.setattr(variants, "_VARIANTS", dict(variants._VARIANTS))
    return variants


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown SAM model 'vit_x'.*vit_b.*vit_t.*vit_tiny"):
        variants.sam_variant("vit_x")
    with pytest.raises(ValueError, match="vit_tiny"):
        models.load_sam("vit_x", untrained=True)


def test_builtin_variants_and_their_encoder_families():
    assert variants.sam_variant_names() == ["vit_b", "vit_l", "vit_h", "vit_t", "vit_tiny"]
    assert models.sam_model_names() == variants.sam_variant_names()
    assert variants.sam_variant("vit_t").encoder == "tinyvit" and variants.sam_variant("vit_b").encoder == "vit"
    tiny = variants.sam_variant("vit_tiny")
    assert tiny.untrained_only and tiny.weights is None
    assert sam_label("vit_t") == "fast (MobileSAM)" and sam_label("nonesuch") == "nonesuch"
    assert "vit_h (SAM ViT-H)" in sam_choices_help()


def test_every_variant_with_weights_has_a_checksum():
    for name in variants.sam_variant_names():
        variant = variants.sam_variant(name)
        assert variant.weights is not None or variant.untrained_only, name
        if variant.weights is not None:
            assert variant.weights.has_checksum, f"{name}: downloads of {variant.weights.filename} cannot be verified"


def test_a_new_variant_is_one_registration(registry):
    """Registering a toy SAM is enough for load_sam, sam_label and the CLI help."""
    from segment_anything.build_sam import _build_sam

    def toy():
        return _build_sam(encoder_embed_dim=32, encoder_depth=1, encoder_num_heads=1,
                          encoder_global_attn_indexes=[0], checkpoint=None)

    registry.register_sam_variant("toy", label="toy SAM (one block)", builder=toy)
    assert "toy" in models.sam_model_names() and sam_label("toy") == "toy SAM (one block)"
    assert "toy (toy SAM (one block))" in sam_choices_help()
    sam = models.load_sam("toy", untrained=True, device="cpu", precision="fp32")
    assert sam.image_encoder.patch_embed.proj.out_channels == 32
    with pytest.raises(models.WeightsNotFound, match="untrained"):
        models.load_sam("toy", device="cpu")
    with pytest.raises(ValueError, match="already registered"):
        registry.register_sam_variant("toy", label="again", builder=toy)


def test_variant_fields_are_checked():
    with pytest.raises(ValueError, match="encoder"):
        variants.SamVariant("x", "x", lambda: None, None, encoder="conv", untrained_only=True)
    with pytest.raises(ValueError, match="untrained_only"):
        variants.SamVariant("x", "x", lambda: None, None)
