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
