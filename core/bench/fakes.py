"""Test doubles that need no model: a deterministic embedder (content -> unit vector).

Used by the ingestion tests and benchmarks (also from subprocesses killed with SIGKILL), where CLIP's
values do not matter but their determinism does.
"""
from __future__ import annotations

import hashlib
import time
import types

import numpy as np

DIM = 16


class FakeEmbedder:
    """embed_images: (N, 16) float32 unit rows from each crop's bytes (same crop, same vector)."""

    dim = DIM
    model_info = {"clip": "fake", "pretrained": None, "untrained": True}

    def __init__(self, delay: float = 0.0):
        self.delay = delay

    def embed_images(self, images, batch_size: int = 32) -> np.ndarray:
        if self.delay:
            time.sleep(self.delay * len(images))
        rows = []
        for im in images:
            seed = int.from_bytes(hashlib.blake2b(np.ascontiguousarray(im).tobytes() + str(im.shape).encode(),
                                                  digest_size=8).digest(), "little")
            rows.append(np.random.default_rng(seed).normal(size=DIM))
        x = np.asarray(rows, np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)


def fake_models(delay: float = 0.0):
    """Models for core.gallery.ingest.ingest with COCO ground-truth masks (no SAM is ever touched)."""
    return types.SimpleNamespace(segmenter=None, embedder=FakeEmbedder(delay))
