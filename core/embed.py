"""CLIP embeddings of object images and of text: (N, D) float32, L2-normalised rows by default.

Besides the model's own preprocessing (shorter side resized, centre crop), an image can be
*squashed*: resized to the model's input size (H, W) = :attr:`Embedder.input_hw` without
cropping, as Global-Local CLIP feeds its local and global views. :meth:`Embedder.token_masked_features`
is Global-Local CLIP's *token masking* on an open_clip VisionTransformer: from block
``masking_block`` on, the patch tokens are multiplied by a candidate's mask on the token grid
before every block (the class token is left alone); the class token's output, after the final
norm and projection, is the candidate's global feature. Features come unnormalised (as CLIP
outputs them) with ``normalize=False``.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image

#: How a candidate mask becomes a token-grid mask: "bilinear" samples the mask at the patch
#: centres like torch's bilinear resize (align_corners=False, no antialias; what the authors'
#: TF.resize did), "area" is the fraction of each patch the mask covers.
GRID_RESIZES = ("bilinear", "area")

#: open_clip's OpenAI normalisation, used when a preprocessing pipeline names none.
_DEFAULT_MEAN = (0.48145466, 0.4578275, 0.40821073)
_DEFAULT_STD = (0.26862954, 0.26130258, 0.27577711)

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

    @property
    def input_hw(self) -> tuple[int, int]:
        """(height, width) of the model's input image (224, 224 for ViT-B-32)."""
        size = getattr(getattr(self.bundle.model, "visual", None), "image_size", None)
        if size is None:
            for t in getattr(self.bundle.preprocess, "transforms", []):
                if type(t).__name__ == "CenterCrop":
                    size = t.size
        if size is None:
            raise ValueError(f"cannot tell the input size of CLIP model {self.bundle.name}")
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return int(h), int(w)

    @property
    def pixel_mean(self) -> tuple[float, float, float]:
        """Per-channel RGB mean (0..1) the model's preprocessing subtracts."""
        return self._normalisation()[0]

    def _normalisation(self) -> tuple[tuple, tuple]:
        for t in getattr(self.bundle.preprocess, "transforms", []):
            if hasattr(t, "mean") and hasattr(t, "std"):
                return tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std)
        return _DEFAULT_MEAN, _DEFAULT_STD

    def resize_to_input(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 at :attr:`input_hw`: ``image`` (h, w, 3) uint8 resized (bicubic) without
        cropping or keeping the aspect ratio; returned as is when it already has that size."""
        image = _check_image(image)
        h, w = self.input_hw
        if image.shape[:2] == (h, w):
            return image
        return np.asarray(Image.fromarray(image).resize((w, h), Image.BICUBIC))

    def squashed_pixels(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """(N, 3, H, W) normalised model input of N (h, w, 3) uint8 images squashed to :attr:`input_hw`."""
        import torch

        if len(images) == 0:
            raise ValueError("no images to embed")
        mean, std = self._normalisation()
        batch = np.stack([self.resize_to_input(im) for im in images]).astype(np.float32) / 255.0
        batch = (batch - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
        return torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))

    def embed_squashed(self, images: Sequence[np.ndarray], batch_size: int = 32, *,
                       normalize: bool = True) -> np.ndarray:
        """(N, D) float32 features of N (h, w, 3) uint8 images, each squashed to :attr:`input_hw`
        (no centre crop); unit rows unless ``normalize`` is False."""
        return self._encode_images(self.squashed_pixels, images, batch_size, normalize)

    @property
    def token_grid(self) -> tuple[int, int]:
        """(rows, columns) of the ViT's patch-token grid (7, 7 for ViT-B-32 at 224 px).
        ValueError for a model token masking does not apply to (see :func:`check_token_maskable`)."""
        visual = check_token_maskable(self.bundle.model, self.bundle.name)
        return tuple(int(v) for v in visual.grid_size)

    @property
    def n_blocks(self) -> int:
        """Number of transformer blocks of the image tower (12 for ViT-B-32)."""
        return len(check_token_maskable(self.bundle.model, self.bundle.name).transformer.resblocks)

    def token_masked_features(self, image: np.ndarray, token_masks, masking_block: int = 9,
                              batch_size: int = 32, *, normalize: bool = True) -> np.ndarray:
        """Global-Local CLIP's global features of one image, one per token-grid mask.

        image: (h, w, 3) uint8, the whole image (squashed to :attr:`input_hw`, never padded);
        token_masks: (N, rows, cols) float in [0, 1] on :attr:`token_grid` (see
        :func:`mask_to_token_grid`); masking_block: the first block whose input patch tokens are
        masked (0-based; negative counts from the end, -3 = the last three blocks). The blocks
        before it run once for the image; the rest once per mask. Returns (N, D) float32, unit
        rows unless ``normalize`` is False. An all-ones mask gives the plain
        :meth:`embed_squashed` feature of the image.
        """
        import torch

        visual = check_token_maskable(self.bundle.model, self.bundle.name)
        start = resolve_masking_block(masking_block, len(visual.transformer.resblocks))
        grid = tuple(int(v) for v in visual.grid_size)
        m = np.asarray(token_masks, dtype=np.float32)
        if m.ndim != 3 or m.shape[1:] != grid or len(m) == 0:
            raise ValueError(f"token_masks must be (N, {grid[0]}, {grid[1]}) with N >= 1, got {m.shape}")
        pixels = self.squashed_pixels([image]).to(self.bundle.device)
        out = []
        with self._lock, torch.inference_mode():
            shared = vit_tokens(visual, pixels, stop=start)
            for first in range(0, len(m), batch_size):
                chunk = torch.from_numpy(m[first:first + batch_size].reshape(-1, grid[0] * grid[1]))
                chunk = chunk.to(device=shared.device, dtype=shared.dtype)
                tokens = shared.expand(len(chunk), -1, -1)
                out.append(vit_masked_head(visual, tokens, chunk, start).float().cpu().numpy())
        feats = np.concatenate(out).astype(np.float32)
        return l2_normalise(feats) if normalize else feats

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """(N, 3, S, S) model input from a list of (h, w, 3) uint8 images."""
        import torch

        if len(images) == 0:
            raise ValueError("no images to embed")
        return torch.stack([self.bundle.preprocess(Image.fromarray(_check_image(im))) for im in images])

    def embed_images(self, images: Sequence[np.ndarray], batch_size: int = 32, *,
                     normalize: bool = True) -> np.ndarray:
        """(N, D) float32 unit vectors for N (h, w, 3) uint8 images, embedded in batches
        (the model's own preprocessing; raw features when ``normalize`` is False)."""
        return self._encode_images(self.preprocess, images, batch_size, normalize)

    def _encode_images(self, to_pixels, images: Sequence[np.ndarray], batch_size: int,
                       normalize: bool) -> np.ndarray:
        """(N, D) float32 image features, `to_pixels(batch)` giving the model input; batched."""
        import torch

        out = []
        for start in range(0, len(images), batch_size):
            batch = to_pixels(images[start:start + batch_size]).to(self.bundle.device)
            with self._lock, torch.inference_mode():
                out.append(self.bundle.model.encode_image(batch).float().cpu().numpy())
        if not out:
            raise ValueError("no images to embed")
        feats = np.concatenate(out).astype(np.float32)
        return l2_normalise(feats) if normalize else feats

    def embed_texts(self, texts: Sequence[str], *, normalize: bool = True) -> np.ndarray:
        """(N, D) float32 unit vectors for N non-empty strings (raw features when ``normalize`` is False)."""
        if isinstance(texts, str):
            raise TypeError("embed_texts takes a list of strings")
        if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
            raise ValueError("texts must be a non-empty list of non-empty strings")
        import torch

        tokens = self.bundle.tokenizer(list(texts)).to(self.bundle.device)
        with self._lock, torch.inference_mode():
            feats = self.bundle.model.encode_text(tokens).float().cpu().numpy().astype(np.float32)
        return l2_normalise(feats) if normalize else feats


def _check_image(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(f"object image must be non-empty (h, w, 3) uint8, got {image.shape} {image.dtype}")
    return image


# ----------------------------------------------------------------------------- token masking


def check_token_maskable(model, name: str = "this model"):
    """The image tower of ``model`` if token masking applies to it, else ValueError.

    It must be an open_clip VisionTransformer whose feature is its class token (the first
    token) after ``ln_post`` and ``proj``: no attentional pooler, pool_type "tok" (not a
    global average of the patch tokens).
    """
    visual = getattr(model, "visual", None)
    needed = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post", "proj")
    if visual is None or any(not hasattr(visual, a) for a in needed) or not hasattr(visual.transformer, "resblocks"):
        raise ValueError(f"token masking needs an open_clip VisionTransformer (a ViT model such as ViT-B-32); "
                         f"{name} has {type(visual).__name__}")
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
        raise ValueError(f"token masking reads the class token; {name} pools its features otherwise "
                         f"(attentional pooler or pool_type={getattr(visual, 'pool_type', None)!r})")
    return visual


def resolve_masking_block(masking_block: int, n_blocks: int) -> int:
    """0-based index of the first masked block: ``masking_block`` itself, or counted from the end
    when negative (-3 of 12 = 9). ValueError unless it names one of the ``n_blocks`` blocks."""
    if isinstance(masking_block, bool) or not isinstance(masking_block, (int, np.integer)):
        raise ValueError(f"masking_block must be an integer, got {masking_block!r}")
    start = int(masking_block) + (n_blocks if masking_block < 0 else 0)
    if not 0 <= start < n_blocks:
        raise ValueError(f"masking_block {masking_block} is outside the model's {n_blocks} blocks "
                         f"(use 0..{n_blocks - 1}, or -1..-{n_blocks} from the end)")
    return start


def _run_block(visual, block, x):
    """One transformer block on batch-first (N, T, D) tokens, whatever layout the model runs in."""
    if getattr(visual.transformer, "batch_first", True):
        return block(x)
    return block(x.transpose(0, 1)).transpose(0, 1)


def vit_tokens(visual, pixels, stop: int):
    """(N, 1 + P, D) tokens of an open_clip VisionTransformer entering block ``stop``.

    pixels: (N, 3, H, W) normalised input. Patch embedding, class token first, positional
    embedding, ``ln_pre``, then blocks 0 .. stop - 1.
    """
    import torch

    x = visual.conv1(pixels)                                  # (N, D, rows, cols)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # (N, P, D)
    cls = visual.class_embedding.to(x.dtype).reshape(1, 1, -1).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.ln_pre(x)
    for block in visual.transformer.resblocks[:stop]:
        x = _run_block(visual, block, x)
    return x


def vit_masked_head(visual, tokens, token_masks, start: int):
    """(N, D_out) class-token features from block ``start`` on, with the patch tokens masked.

    tokens: (N, 1 + P, D) entering block ``start`` (from :func:`vit_tokens`); token_masks:
    (N, P) in [0, 1], row-major over the token grid. Before every block from ``start`` on the
    patch tokens are multiplied by their mask value; the class token is left alone. The class
    token's output goes through ``ln_post`` and ``proj``.
    """
    import torch

    weights = token_masks.unsqueeze(-1)
    x = tokens
    for block in visual.transformer.resblocks[start:]:
        x = torch.cat([x[:, :1], x[:, 1:] * weights], dim=1)
        x = _run_block(visual, block, x)
    pooled = visual.ln_post(x[:, 0])
    return pooled @ visual.proj if visual.proj is not None else pooled


def mask_to_token_grid(mask: np.ndarray, grid_hw: tuple[int, int], how: str = "bilinear") -> np.ndarray:
    """(rows, cols) float32 in [0, 1]: an (H, W) bool mask of the whole image on the token grid.

    The image is squashed to the model input, so token (i, j) covers the image rows
    [i H / rows, (i + 1) H / rows) and likewise the columns. ``how``: "bilinear" samples the
    mask at the token centres with bilinear weights (torch's bilinear resize, align_corners
    False, no antialias -- what the authors' code did); "area" is the fraction of the token's
    pixels inside the mask (torch's adaptive average pooling). Never makes a float copy of the
    full mask for "bilinear"; "area" needs one int32 array of the mask's size.
    """
    m = np.asarray(mask)
    if m.ndim != 2 or m.dtype != bool or 0 in m.shape:
        raise ValueError(f"mask must be a non-empty (H, W) bool array, got {m.shape} {m.dtype}")
    rows, cols = (int(v) for v in grid_hw)
    h, w = m.shape
    if how == "bilinear":
        def taps(n_out: int, n_in: int):
            src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
            lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
            hi = np.minimum(lo + 1, n_in - 1)
            return lo, hi, (src - lo).astype(np.float32)

        y0, y1, wy = taps(rows, h)
        x0, x1, wx = taps(cols, w)
        wy, wx = wy[:, None], wx[None, :]
        grid = ((1 - wy) * (1 - wx) * m[np.ix_(y0, x0)] + (1 - wy) * wx * m[np.ix_(y0, x1)]
                + wy * (1 - wx) * m[np.ix_(y1, x0)] + wy * wx * m[np.ix_(y1, x1)])
        return grid.astype(np.float32)
    if how == "area":
        def bounds(n_out: int, n_in: int):
            i = np.arange(n_out)
            return (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)  # floor, ceil

        ys, ye = bounds(rows, h)
        xs, xe = bounds(cols, w)
        csum = np.zeros((h, w + 1), dtype=np.int32)
        np.cumsum(m, axis=1, dtype=np.int32, out=csum[:, 1:])
        per_row = csum[:, xe] - csum[:, xs]                       # (H, cols)
        rsum = np.zeros((h + 1, cols), dtype=np.int64)
        np.cumsum(per_row, axis=0, out=rsum[1:])
        counts = rsum[ye] - rsum[ys]                              # (rows, cols)
        areas = (ye - ys)[:, None] * (xe - xs)[None, :]
        return (counts / areas).astype(np.float32)
    raise ValueError(f"how must be one of {GRID_RESIZES}, got {how!r}")
