"""Fast path vs stock for every registered SAM variant (core.sam.variants), as timm's tests run over
every registered model: the encoder family's fast classes on its timing probe, the fast mask
decoder, and the swap back to stock classes."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from core.sam import fast_sam
from core.sam.fast_ops import FastModule
from core.sam.variants import sam_variant, sam_variant_names

#: Variants whose untrained build takes seconds and gigabytes: run with the slow tests.
HEAVY = {"vit_b", "vit_l", "vit_h"}
VARIANTS = [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in sam_variant_names()]


@pytest.fixture(scope="module", params=VARIANTS)
def stock(request):
    torch.manual_seed(0)
    sam = sam_variant(request.param).builder().eval()
    sam.requires_grad_(False)
    return request.param, sam


def _token_cosines(ref, out):
    return F.cosine_similarity(ref.flatten(2)[0].T, out.flatten(2)[0].T, dim=1)


def test_every_variant_has_fast_classes_for_its_encoder(stock):
    name, sam = stock
    table = fast_sam.fast_classes()
    assert type(sam.image_encoder) in table and type(sam.mask_decoder) in table
    assert type(sam.image_encoder) in sam_variant(name).family.fast_classes()


def test_fast_encoder_matches_stock_on_the_family_probe(stock):
    """fp32 fast path: per-token cosine > 0.99999 vs stock on the family's probe; the device's best
    precision >= 0.999; swapping back gives the stock classes with the same parameters."""
    name, sam = stock
    family = sam_variant(name).family
    side = family.probe_side
    probe = family.probe(sam.image_encoder, side)
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = probe(x)
        exact = fast_sam.accelerate_encoder(copy.deepcopy(probe), torch.float32)
        assert isinstance(exact, FastModule)
        assert _token_cosines(ref, exact(x)).min() > 0.99999
        best = fast_sam.accelerate_encoder(copy.deepcopy(probe), fast_sam.best_dtype("cpu"))
        assert _token_cosines(ref, best(x)).min() >= 0.999
    back = fast_sam.restore(exact)
    assert {type(m) for m in back.modules()} == {type(m) for m in probe.modules()}
    assert all(a is b for a, b in zip(back.parameters(), exact.parameters()))   # shared, not copied


def test_fast_decoder_matches_stock(stock):
    name, sam = stock
    decoder = fast_sam.fast_decoder_copy(sam.mask_decoder, torch.float32)
    gen = torch.Generator().manual_seed(2)
    emb = torch.randn(1, sam.prompt_encoder.embed_dim, *sam.prompt_encoder.image_embedding_size, generator=gen)
    points = (torch.rand(4, 1, 2, generator=gen) * sam.image_encoder.img_size, torch.ones(4, 1, dtype=torch.int64))
    with torch.inference_mode():
        sparse, dense = sam.prompt_encoder(points=points, boxes=None, masks=None)
        pe = sam.prompt_encoder.get_dense_pe()
        ref = sam.mask_decoder(emb, pe, sparse, dense, True)
        out = decoder(emb, pe, sparse, dense, True)
    torch.testing.assert_close(out[0], ref[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[1], ref[1], atol=1e-5, rtol=1e-4)
