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


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    try:
        return int(value) if value else default
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from exc


#: Where downloaded weights, the example gallery and other caches live.
CACHE_DIR: Path = _env_path("SAMCLIP_CACHE", Path.home() / ".cache" / "samclip")
#: Explicit weight files (override the cache and the download).
SAM_CHECKPOINT: str | None = os.environ.get("SAMCLIP_SAM_CHECKPOINT") or None
CLIP_CHECKPOINT: str | None = os.environ.get("SAMCLIP_CLIP_CHECKPOINT") or None
#: Default model names.
SAM_MODEL: str = os.environ.get("SAMCLIP_SAM_MODEL", "vit_b")
CLIP_MODEL: str = os.environ.get("SAMCLIP_CLIP_MODEL", "ViT-B-32")
CLIP_PRETRAINED: str = os.environ.get("SAMCLIP_CLIP_PRETRAINED", "openai")
#: Fast-path SAM precision: "auto" (bf16 on CPUs/GPUs with native support, else fp32),
#: "fp32" (masks identical to stock SAM, slower), "bf16" or "fp16".
SAM_PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
SAM_PRECISION: str = os.environ.get("SAMCLIP_SAM_PRECISION", "auto")
#: "auto" picks CUDA when available, else CPU; or name a torch device ("cpu", "cuda:1").
DEVICE: str = os.environ.get("SAMCLIP_DEVICE", "auto")
#: Set to 1 to never download weights (fail with instructions instead).
OFFLINE: bool = os.environ.get("SAMCLIP_OFFLINE", "0") not in ("", "0", "false", "False")
#: How many SAM image embeddings the shared segmenter keeps (about 4 MB each).
EMBED_CACHE_SIZE: int = _env_int("SAMCLIP_EMBED_CACHE", 16)
#: Largest image accepted, in pixels (width * height); bigger ones are refused with a message.
MAX_IMAGE_PIXELS: int = _env_int("SAMCLIP_MAX_IMAGE_PIXELS", 100_000_000)
#: Largest upload accepted, in bytes.
MAX_IMAGE_BYTES: int = _env_int("SAMCLIP_MAX_IMAGE_BYTES", 50 * 1024 * 1024)

# ---- serving many users (the app; see README "Serving many users") ----------------------
#: SAM models a person may choose between in the app (comma-separated; the first of
#: SAMCLIP_SAM_MODEL is the default). Each is loaded once per process and shared.
SAM_CHOICES: tuple[str, ...] = tuple(
    n.strip() for n in os.environ.get("SAMCLIP_SAM_MODELS", "vit_t,vit_b").split(",") if n.strip())
#: Uploads are downscaled to this longer side for SAM (SAM itself works at 1024).
WORK_MAX_SIDE: int = _env_int("SAMCLIP_WORK_MAX_SIDE", 1024)
#: Largest upload the web server accepts, in bytes (refused before it is stored).
MAX_UPLOAD_BYTES: int = _env_int("SAMCLIP_MAX_UPLOAD_BYTES", 20 * 1024 * 1024)
#: Largest upload in pixels (checked from the header, before decoding).
MAX_UPLOAD_PIXELS: int = _env_int("SAMCLIP_MAX_UPLOAD_PIXELS", 40_000_000)
#: A session's state (and its files) are dropped this many seconds after its last event,
#: or when its page is closed.
SESSION_TTL_S: int = _env_int("SAMCLIP_SESSION_TTL", 1800)
#: Gradio's cache (uploads, outputs): checked every N seconds, files older than M removed.
CACHE_SWEEP_S: int = _env_int("SAMCLIP_CACHE_SWEEP", 300)
CACHE_MAX_AGE_S: int = _env_int("SAMCLIP_CACHE_MAX_AGE", 1800)
#: Pictures kept for the canvases (one JPEG per image shown; oldest removed beyond this).
DISPLAY_FILES: int = _env_int("SAMCLIP_DISPLAY_FILES", 256)
#: Longest text a model gets (search text, referring expression), in characters.
MAX_TEXT_CHARS: int = _env_int("SAMCLIP_MAX_TEXT", 200)
#: Gradio workers for clicks (decoder calls, ~30 ms each); encodes, everything-mode and
#: CLIP work each run one at a time, so a 2-core machine is not oversubscribed.
CLICK_WORKERS: int = _env_int("SAMCLIP_CLICK_WORKERS", 2)
#: torch threads per model call (0: leave torch's default).
TORCH_THREADS: int = _env_int("SAMCLIP_TORCH_THREADS", 0)
