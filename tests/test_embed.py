"""core.embed: shapes, unit norms, batching invariance, text, errors (untrained ViT-B-32)."""
import numpy as np
import pytest

from core.embed import l2_normalise


def test_image_embeddings_are_unit_float32(embedder, coco_image):
    image = coco_image[0]
    crops = [image[:100, :100], image[50:300, 20:90], image]
    out = embedder.embed_images(crops)
    assert out.shape == (3, 512) and out.dtype == np.float32 and out.flags.c_contiguous
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert embedder.dim == 512


def test_batching_does_not_change_results(embedder, coco_image):
    image = coco_image[0]
    crops = [image[i * 20:i * 20 + 120, i * 30:i * 30 + 150] for i in range(5)]
    together = embedder.embed_images(crops, batch_size=32)
    in_twos = embedder.embed_images(crops, batch_size=2)
    assert np.allclose(together, in_twos, atol=1e-4)


def test_text_embeddings(embedder):
    out = embedder.embed_texts(["a dog", "a red car"])
    assert out.shape == (2, 512) and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(out[0], out[1])


def test_errors(embedder):
    with pytest.raises(ValueError):
        embedder.embed_images([])
    with pytest.raises(ValueError):
        embedder.embed_images([np.zeros((0, 5, 3), np.uint8)])
    with pytest.raises(ValueError):
        embedder.embed_texts(["  "])
    with pytest.raises(TypeError):
        embedder.embed_texts("a dog")


def test_l2_normalise_keeps_zero_rows():
    out = l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert np.allclose(out, [[0.6, 0.8], [0, 0]])


# ------------------------------------------------------------------------------- token masking (Global-Local)

import torch  # noqa: E402  (tests may import torch at any point; the library imports it lazily)
import torch.nn.functional as F  # noqa: E402

from core.embed import GRID_RESIZES, mask_to_token_grid, resolve_masking_block, vit_masked_head, vit_tokens  # noqa: E402


def test_token_masking_with_an_all_ones_mask_is_the_plain_image_feature(embedder, coco_image):
    image = coco_image[0]
    plain = embedder.embed_squashed([image], normalize=False)
    assert embedder.token_grid == (7, 7) and embedder.n_blocks == 12 and embedder.input_hw == (224, 224)
    for block in (0, 9, 11, -1):
        masked = embedder.token_masked_features(image, np.ones((2, 7, 7)), block, normalize=False)
        np.testing.assert_allclose(masked, np.repeat(plain, 2, axis=0), rtol=1e-4, atol=1e-4)
    # squashed, not centre-cropped: the plain feature differs from the model's own preprocessing
    assert not np.allclose(l2_normalise(plain), embedder.embed_images([image]), atol=1e-3)


def test_patch_tokens_outside_the_mask_cannot_change_the_global_feature(embedder, coco_image):
    visual = embedder.bundle.model.visual
    pixels = embedder.squashed_pixels([coco_image[0]])
    grid = np.zeros((7, 7), np.float32)
    grid[2:5, 1:4] = 1.0
    weights = torch.from_numpy(grid.reshape(1, 49))
    with torch.inference_mode():
        tokens = vit_tokens(visual, pixels, stop=9)                   # entering block 9
        before = vit_masked_head(visual, tokens, weights, 9)
        noisy = tokens.clone()
        outside = torch.from_numpy(np.flatnonzero(grid.reshape(-1) == 0) + 1)   # +1: the class token is first
        noisy[:, outside] += 5.0 * torch.randn(1, len(outside), tokens.shape[-1])
        after = vit_masked_head(visual, noisy, weights, 9)
        inside = torch.from_numpy(np.flatnonzero(grid.reshape(-1)) + 1)
        changed = tokens.clone()
        changed[:, inside] += 5.0 * torch.randn(1, len(inside), tokens.shape[-1])
        moved = vit_masked_head(visual, changed, weights, 9)
    np.testing.assert_allclose(after.numpy(), before.numpy(), atol=1e-5)
    assert not np.allclose(moved.numpy(), before.numpy(), atol=1e-3)
    # in pixels: masking from block 0, repainting the image outside the masked patches changes nothing
    image = embedder.resize_to_input(coco_image[0]).copy()
    repainted = image.copy()
    outside_px = np.kron(grid == 0, np.ones((32, 32), bool))
    repainted[outside_px] = 255 - repainted[outside_px]
    a = embedder.token_masked_features(image, grid[None], 0)
    b = embedder.token_masked_features(repainted, grid[None], 0)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert not np.allclose(embedder.token_masked_features(repainted, grid[None], 9), b, atol=1e-4)


def test_token_masked_features_batching_and_errors(embedder, coco_image):
    image = coco_image[0][:200, :300]
    rng = np.random.default_rng(0)
    grids = rng.random((5, 7, 7)).astype(np.float32)
    together = embedder.token_masked_features(image, grids, 9, batch_size=32)
    in_twos = embedder.token_masked_features(image, grids, 9, batch_size=2)
    np.testing.assert_allclose(together, in_twos, atol=1e-5)
    assert together.shape == (5, 512) and np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="outside the model's 12 blocks"):
        embedder.token_masked_features(image, grids, 12)
    with pytest.raises(ValueError, match=r"\(N, 7, 7\)"):
        embedder.token_masked_features(image, grids[:, :6], 9)
    assert resolve_masking_block(-3, 12) == 9 and resolve_masking_block(9, 24) == 9
    with pytest.raises(ValueError):
        resolve_masking_block(-13, 12)


def test_token_masking_refuses_models_without_a_class_token():
    from core.embed import Embedder

    class Bundle:
        name = "RN50"
        model = type("M", (), {"visual": torch.nn.Conv2d(3, 3, 1)})()
        preprocess = None

    with pytest.raises(ValueError, match="VisionTransformer"):
        Embedder(Bundle()).token_grid


@pytest.mark.parametrize("how", GRID_RESIZES)
@pytest.mark.parametrize("shape", [(100, 170), (7, 7), (5, 3), (480, 640), (33, 1000)])
def test_mask_to_token_grid_matches_torch(how, shape):
    mask = np.random.default_rng(sum(shape)).random(shape) > 0.6
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    expected = (F.interpolate(t, (7, 7), mode="bilinear", align_corners=False, antialias=False) if how == "bilinear"
                else F.adaptive_avg_pool2d(t, (7, 7)))[0, 0].numpy()
    got = mask_to_token_grid(mask, (7, 7), how)
    assert got.shape == (7, 7) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-4)
    with pytest.raises(ValueError):
        mask_to_token_grid(mask, (7, 7), "nearest")


def test_raw_features_are_the_unnormalised_outputs(embedder):
    raw = embedder.embed_texts(["a dog", "a cat"], normalize=False)
    np.testing.assert_allclose(l2_normalise(raw), embedder.embed_texts(["a dog", "a cat"]), atol=1e-6)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)


def test_token_masking_works_on_another_vit():
    """Any open_clip ViT: ViT-S-16 has a 14 x 14 token grid; -3 masks its last three blocks."""
    from core.embed import Embedder
    from core.models import load_clip

    other = Embedder(load_clip("ViT-S-16", untrained=True, device="cpu"))
    assert other.token_grid == (14, 14)
    image = np.random.default_rng(1).integers(0, 255, (90, 150, 3), dtype=np.uint8)
    plain = other.embed_squashed([image])
    np.testing.assert_allclose(other.token_masked_features(image, np.ones((1, 14, 14)), -3), plain, atol=1e-4)
    half = np.zeros((1, 14, 14), np.float32)
    half[:, :, :7] = 1
    assert not np.allclose(other.token_masked_features(image, half, -3), plain, atol=1e-3)
