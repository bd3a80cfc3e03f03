"""SAM speed and equivalence measurements: stock float32 eager vs the fast path (core.fast_sam).

Functions only (``core/bench.py`` turns them into the ``bench`` command). Each
returns a flat dict of plain numbers: medians over ``repeats`` in seconds
(``*_s``) or milliseconds (``*_ms``), ratios fast/stock measured in the same
run, and the settings used. Models are SAM architectures with untrained,
seeded weights unless real weights are installed (same compute either way).
``quick=True`` trims repeats and images so the whole SAM part fits in about
a minute on a 2-core CPU.
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
COCO_IMAGES = REPO.parent / "shared" / "data" / "coco128" / "images"


# ----------------------------------------------------------------- inputs
def sample_images(n: int = 1) -> List[np.ndarray]:
    """n real photos as (H, W, 3) uint8 RGB: coco128 beside the repo if present, else examples/."""
    from core.images import load_image

    paths = sorted(COCO_IMAGES.glob("*.jpg"))[:n] or sorted((REPO / "examples").glob("*.jpg"))[:n]
    if not paths:
        raise FileNotFoundError(f"no sample images in {COCO_IMAGES} or {REPO / 'examples'}")
    return [load_image(p) for p in paths]


def load_pair(model: str = "vit_b", device: str = "cpu"):
    """(stock, fast) SAM modules with identical untrained weights (cached by core.models)."""
    from core.models import load_sam

    stock = load_sam(model, untrained=True, fast=False, device=device)
    fast = load_sam(model, untrained=True, fast=True, device=device)
    return stock, fast


def load_exact(model: str = "vit_b", device: str = "cpu"):
    """The fast path in float32 (``precision="fp32"``): stock SAM's maths, re-associated."""
    from core.models import load_sam

    return load_sam(model, untrained=True, fast=True, device=device, precision="fp32")


_VARIANTS = {}


def _variant(name: str, model: str, device: str, adjust=None, **accelerate):
    """A fast-path copy of the stock module built with `accelerate` options, then `adjust(sam)`; cached."""
    import copy

    from core.fast_sam import accelerate_sam

    key = (name, model, device)
    if key not in _VARIANTS:
        stock, _ = load_pair(model, device)
        sam = accelerate_sam(copy.deepcopy(stock), **accelerate)
        if adjust is not None:
            adjust(sam)
        _VARIANTS[key] = sam
    return _VARIANTS[key]


def _windowed_attention_to_fp32(sam) -> None:
    for block in sam.image_encoder.blocks:
        if block.window_size > 0:
            block.attn.float()


def load_window_fp32_variant(model: str = "vit_b", device: str = "cpu"):
    """The fast path with the windowed blocks' attention back in float32 (a precision ablation)."""
    return _variant("window_fp32", model, device, adjust=_windowed_attention_to_fp32)


def load_bf16_decoder_variant(model: str = "vit_b", device: str = "cpu"):
    """The fast path with the mask decoder in the encoder's precision too (opt-in; see fast_sam)."""
    return _variant("bf16_decoder", model, device, decoder_dtype=None)


def machine_load() -> float:
    """1-minute load average (timings on a shared machine are only comparable within one run)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of fn() in seconds over `repeats` runs after `warmup` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _encoder_input(sam, image):
    import torch
    from segment_anything.utils.transforms import ResizeLongestSide

    resized = ResizeLongestSide(sam.image_encoder.img_size).apply_image(image)
    x = torch.as_tensor(resized).permute(2, 0, 1)[None].float()
    return sam.preprocess(x), resized.shape[:2]


def _precision(sam) -> str:
    from core import fast_sam

    return fast_sam.precision_name(fast_sam.fast_dtype(sam))


# ----------------------------------------------------------------- benchmarks
def bench_encoder(model: str = "vit_b", repeats: int = 3, quick: bool = False) -> Dict[str, float]:
    """Image encoder time on one 1024x1024 input: stock fp32 eager vs fast path (median of repeats)."""
    import torch

    stock, fast = load_pair(model)
    exact = load_exact(model)
    window_fp32 = load_window_fp32_variant(model)
    x, _ = _encoder_input(stock, sample_images(1)[0])
    stock_reps = 1 if quick else repeats
    fast_reps = repeats if quick else max(repeats, 7)  # ~1.4 s each; the median needs more on a noisy VM
    with torch.inference_mode():
        t_fast = median_time(lambda: fast.image_encoder(x), fast_reps, warmup=1)
        t_exact = median_time(lambda: exact.image_encoder(x), stock_reps, warmup=1)
        t_window = median_time(lambda: window_fp32.image_encoder(x), repeats, warmup=1)
        t_stock = median_time(lambda: stock.image_encoder(x), stock_reps, warmup=0)
    return {
        "model": model, "threads": torch.get_num_threads(), "fast_precision": _precision(fast),
        "encoder_load_avg": machine_load(),
        "encoder_stock_fp32_s": t_stock, "encoder_fast_s": t_fast, "encoder_ratio": t_fast / t_stock,
        "encoder_fast_fp32_s": t_exact, "encoder_fast_fp32_ratio": t_exact / t_stock,
        "encoder_window_attention_fp32_s": t_window,
        "encoder_stock_repeats": stock_reps, "encoder_fast_repeats": fast_reps,
    }


def bench_click(model: str = "vit_b", repeats: int = 20, quick: bool = False) -> Dict[str, float]:
    """Click-to-mask latency with a cached embedding through core.segment.Segmenter (fast vs stock).

    One positive point per click (3 candidate masks, upsampled to the original
    size), points spread over the image; also the cost of set_image on an
    image already seen (cache hit).
    """
    from core.segment import Segmenter

    repeats = min(repeats, 10) if quick else repeats
    image = sample_images(1)[0]
    h, w = image.shape[:2]
    rng = np.random.default_rng(0)
    clicks = rng.uniform([0, 0], [w, h], size=(repeats + 1, 2))
    out: Dict[str, float] = {"model": model, "click_repeats": repeats, "click_load_avg": machine_load()}
    variants = (*zip(("stock", "fast"), load_pair(model)), ("fast_bf16_decoder", load_bf16_decoder_variant(model)))
    for label, sam in variants:
        seg = Segmenter(sam)
        emb = seg.set_image(image)
        it = iter(clicks)
        out[f"click_{label}_ms"] = 1e3 * median_time(lambda: seg.predict(emb, points=[next(it)]), repeats)
        if label == "fast":
            out["set_image_cached_ms"] = 1e3 * median_time(lambda: seg.set_image(image), repeats)
    out["click_ratio"] = out["click_fast_ms"] / out["click_stock_ms"]
    out["click_bf16_decoder_ratio"] = out["click_fast_bf16_decoder_ms"] / out["click_stock_ms"]
    return out


def bench_everything(model: str = "vit_b", repeats: int = 1, quick: bool = False,
                     include_stock: bool = False) -> Dict[str, float]:
    """Everything mode, encoder included, with the fast path: CPU defaults (16x16) and SAM's 32x32 (not quick).

    Each run uses a fresh Segmenter so the image is encoded again. With
    untrained weights the predicted IoU is near random, so few masks pass the
    default thresholds; ``*_open_s`` also times the worst case with every
    filter off (all candidates upsampled and NMS'd). include_stock adds
    segment_anything's SamAutomaticMaskGenerator (32x32, fp32, re-encodes).
    """
    import torch

    from core.automask import AutoMaskSettings
    from core.segment import Segmenter

    stock, fast = load_pair(model)
    image = sample_images(1)[0]
    settings = {"cpu16": AutoMaskSettings()}
    if not quick:  # quick: the CPU default only (32x32 costs ~4x more)
        settings["sam32"] = AutoMaskSettings.sam_defaults()
        settings["cpu16_open"] = AutoMaskSettings(pred_iou_thresh=0, stability_score_thresh=0)
    out: Dict[str, float] = {"model": model, "everything_repeats": repeats, "everything_load_avg": machine_load()}
    for name, cfg in settings.items():
        counts = []

        def run():
            seg = Segmenter(fast)
            emb = seg.set_image(image)
            counts.append(len(seg.everything(emb, **vars(cfg))))

        out[f"everything_{name}_s"] = median_time(run, repeats, warmup=0)
        out[f"everything_{name}_masks"] = counts[-1]
    if include_stock and not quick:
        from segment_anything import SamAutomaticMaskGenerator

        gen = SamAutomaticMaskGenerator(stock)
        with torch.inference_mode():
            out["everything_stock_sam32_s"] = median_time(lambda: gen.generate(image), 1, warmup=0)
    return out


def bench_equivalence(model: str = "vit_b", quick: bool = False, images: int = 3,
                      prompts: int = 16) -> Dict[str, float]:
    """Fast vs stock fp32 on real images: per-token encoder cosine and low-res mask IoU on the same prompts.

    Each side runs its own encoder and decoder; prompts are random positive
    points (3 masks each). ``*_fp32_*`` rows are the fast path with
    ``precision="fp32"``; ``*_window_fp32_*`` the fast path with the windowed
    blocks' attention in float32 (see load_window_fp32_variant). Also reports how far the reference logits are from
    trivial (std, fraction of pixels on each side of the threshold).
    """
    import torch
    import torch.nn.functional as F

    stock, fast = load_pair(model)
    exact = load_exact(model)
    bf16_decoder = load_bf16_decoder_variant(model)
    window_fp32 = load_window_fp32_variant(model)
    rng = np.random.default_rng(0)
    cos_min, cos_mean, ious, ious_bf16, ious_fp32, ious_window, stds, fg = [], [], [], [], [], [], [], []
    for image in sample_images(1 if quick else images):
        x, (h, w) = _encoder_input(stock, image)
        pts = torch.as_tensor(rng.uniform([0, 0], [w, h], size=(prompts, 1, 2)), dtype=torch.float32)
        labels = torch.ones(prompts, 1, dtype=torch.int64)
        logits = {}
        with torch.inference_mode():
            for name, sam in (("stock", stock), ("fast", fast), ("fp32", exact), ("window_fp32", window_fp32)):
                emb = sam.image_encoder(x)
                sparse, dense = sam.prompt_encoder(points=(pts, labels), boxes=None, masks=None)
                logits[name], _ = sam.mask_decoder(emb, sam.prompt_encoder.get_dense_pe(), sparse, dense, True)
                logits[name + "_emb"] = emb
            logits["bf16_decoder"], _ = bf16_decoder.mask_decoder(
                logits["fast_emb"], bf16_decoder.prompt_encoder.get_dense_pe(), sparse, dense, True)
        cos = F.cosine_similarity(logits["stock_emb"].flatten(2)[0].T, logits["fast_emb"].flatten(2)[0].T, dim=1)
        cos_min.append(cos.min().item())
        cos_mean.append(cos.mean().item())
        ref = (logits["stock"] > 0).flatten(2)
        for name, store in (("fast", ious), ("bf16_decoder", ious_bf16), ("fp32", ious_fp32),
                            ("window_fp32", ious_window)):
            new = (logits[name] > 0).flatten(2)
            inter = (ref & new).sum(-1).float()
            union = (ref | new).sum(-1).float().clamp(min=1)
            store.extend((inter / union).flatten().tolist())
        stds.append(logits["stock"].std().item())
        fg.append(ref.float().mean().item())
    return {
        "model": model, "equivalence_images": len(cos_min), "equivalence_masks": len(ious),
        "encoder_cosine_min": min(cos_min), "encoder_cosine_mean": float(np.mean(cos_mean)),
        "mask_iou_min": min(ious), "mask_iou_mean": float(np.mean(ious)),
        "mask_iou_bf16_decoder_min": min(ious_bf16), "mask_iou_bf16_decoder_mean": float(np.mean(ious_bf16)),
        "mask_iou_fp32_min": min(ious_fp32), "mask_iou_fp32_mean": float(np.mean(ious_fp32)),
        "mask_iou_window_fp32_min": min(ious_window), "mask_iou_window_fp32_mean": float(np.mean(ious_window)),
        "mask_iou_below_0_99": int(sum(i < 0.99 for i in ious)),
        "reference_logit_std": float(np.mean(stds)), "reference_foreground_fraction": float(np.mean(fg)),
    }


def bench_sam(model: str = "vit_b", repeats: int = 3, quick: bool = False,
              include_stock: bool = False, log: Optional[Callable[[str], None]] = None) -> Dict[str, float]:
    """All of the above in one dict (log(msg) reports progress)."""
    result: Dict[str, float] = {}
    steps = [("encoder", lambda: bench_encoder(model, repeats, quick)),
             ("click", lambda: bench_click(model, 20, quick)),
             ("everything", lambda: bench_everything(model, 1, quick, include_stock)),
             ("equivalence", lambda: bench_equivalence(model, quick))]
    for name, step in steps:
        if log:
            log(f"SAM {model}: {name} ...")
        result.update(step())
    return result
