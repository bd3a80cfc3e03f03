"""Deployment settings: environment-backed constants, read once at import.

Algorithm settings are keyword arguments of the functions that use them; only things an
operator sets per machine (paths, device, limits) live here.
"""
from __future__ import annotations

import os
from pathlib import Path


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else default


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    try:
        return int(value) if value else default
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from exc


def env_flag(name: str, default: bool) -> bool:
    """A yes/no setting: "1", "true", "yes", "on" are yes; "0", "false", "no", "off" no (any
    case); unset, empty or anything else gives `default`."""
    value = os.environ.get(name, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return default


#: Where downloaded weights, the example gallery and other caches live.
CACHE_DIR: Path = _env_path("SAMCLIP_CACHE", Path.home() / ".cache" / "samclip")
#: Explicit weight files (override the cache and the download).
SAM_CHECKPOINT: str | None = os.environ.get("SAMCLIP_SAM_CHECKPOINT") or None
CLIP_CHECKPOINT: str | None = os.environ.get("SAMCLIP_CLIP_CHECKPOINT") or None
#: Default model names. SAM: None = by device (`core.models.default_sam_model`: vit_t on a
#: CPU, vit_b on a GPU); the evaluations default to vit_b whatever this says.
SAM_MODEL: str | None = os.environ.get("SAMCLIP_SAM_MODEL", "").strip() or None
CLIP_MODEL: str = os.environ.get("SAMCLIP_CLIP_MODEL", "ViT-B-32")
CLIP_PRETRAINED: str = os.environ.get("SAMCLIP_CLIP_PRETRAINED", "openai")
#: Fast-path SAM precision: "auto" (on a CPU with native bf16, the faster of fp32/bf16 as
#: measured once and remembered, see core.sam.precision; fp32 on other CPUs; bf16/fp16 on GPUs),
#: "fp32" (masks identical to stock SAM, slower), "bf16" or "fp16".
SAM_PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
SAM_PRECISION: str = os.environ.get("SAMCLIP_SAM_PRECISION", "auto")
#: "auto" picks CUDA when available, else CPU; or name a torch device ("cpu", "cuda:1").
DEVICE: str = os.environ.get("SAMCLIP_DEVICE", "auto")
#: Set to 1 (yes/true/on) to never download weights (fail with instructions instead).
OFFLINE: bool = env_flag("SAMCLIP_OFFLINE", False)
#: How many SAM image embeddings the shared segmenter keeps (about 4 MB each).
EMBED_CACHE_SIZE: int = env_int("SAMCLIP_EMBED_CACHE", 16)
#: Memory for recent prompt predictions per segmenter, in MB (about 3 MB each at 1024 px):
#: a hover, a click on the same spot and its commit cost one decoder run.
PREDICTION_CACHE_MB: int = env_int("SAMCLIP_PREDICTION_CACHE_MB", 48)
#: Memory for per-image analyses shared by all callers (automatic masks, grounding
#: candidates and their CLIP features; core.analysis), in MB.
ANALYSIS_CACHE_MB: int = env_int("SAMCLIP_ANALYSIS_CACHE_MB", 256)
#: Largest image accepted, in pixels (width * height); bigger ones are refused with a message.
MAX_IMAGE_PIXELS: int = env_int("SAMCLIP_MAX_IMAGE_PIXELS", 100_000_000)
#: Largest upload accepted, in bytes.
MAX_IMAGE_BYTES: int = env_int("SAMCLIP_MAX_IMAGE_BYTES", 50 * 1024 * 1024)
