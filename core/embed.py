"""CLIP embeddings of object images and of text: (N, D) float32, L2-normalised rows."""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # torch is imported where it is used, so `import core.embed` stays light
    import torch


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows of `x` scaled to unit L2 norm (zero rows stay zero); float32, C-contiguous."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


class Embedder:
    """Embeds images and texts with one shared CLIP model (`core.models.ClipBundle`)."""

    def __init__(self, bundle):
        self.bundle = bundle
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        """Embedding width D (512 for ViT-B-32)."""
        width = getattr(getattr(self.bundle.model, "visual", None), "output_dim", None)
        return int(width) if width else int(self.embed_texts(["object"]).shape[1])

    @property
    def model_info(self) -> dict:
        """What a gallery records about the model that filled it."""
        return {"clip": self.bundle.name, "pretrained": self.bundle.pretrained,
                "untrained": self.bundle.untrained}

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """(N, 3, S, S) model input from a list of (h, w, 3) uint8 images."""
        import torch

        if len(images) == 0:
            raise ValueError("no images to embed")
        return torch.stack([self.bundle.preprocess(Image.fromarray(_check_image(im))) for im in images])

    def embed_images(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """(N, D) float32 unit vectors for N (h, w, 3) uint8 images, embedded in batches."""
        import torch

        out = []
        for start in range(0, len(images), batch_size):
            batch = self.preprocess(images[start:start + batch_size]).to(self.bundle.device)
            with self._lock, torch.inference_mode():
                out.append(self.bundle.model.encode_image(batch).float().cpu().numpy())
        if not out:
            raise ValueError("no images to embed")
        return l2_normalise(np.concatenate(out))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float32 unit vectors for N non-empty strings."""
        if isinstance(texts, str):
            raise TypeError("embed_texts takes a list of strings")
        if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
            raise ValueError("texts must be a non-empty list of non-empty strings")
        import torch

        tokens = self.bundle.tokenizer(list(texts)).to(self.bundle.device)
        with self._lock, torch.inference_mode():
            feats = self.bundle.model.encode_text(tokens).float().cpu().numpy()
        return l2_normalise(feats)


def _check_image(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(f"object image must be non-empty (h, w, 3) uint8, got {image.shape} {image.dtype}")
    return image
