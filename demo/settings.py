"""Serving settings of the app: environment-backed constants, read once at import.

Only the app reads these (sessions, uploads, files, click workers); the library's own
settings (weights, device, cache, image limits) stay in core/config.py.
"""
from __future__ import annotations

import os

from core.config import env_flag as _env_flag
from core.config import env_int as _env_int

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
#: "My gallery" (objects a person adds in Search) is bounded per session: images kept (each
#: stored once, at working size) and objects per view.
MY_GALLERY_IMAGES: int = _env_int("SAMCLIP_MY_GALLERY_IMAGES", 16)
MY_GALLERY_OBJECTS: int = _env_int("SAMCLIP_MY_GALLERY_OBJECTS", 400)
#: The automatic-mask grid (points per side) for Everything, Refer and the example gallery;
#: 0 keeps the model's default (16 trained, 4 untrained). Set 16 to measure the trained
#: path's cost with untrained weights.
POINTS_PER_SIDE: int = _env_int("SAMCLIP_POINTS_PER_SIDE", 0)
#: After a heavy request (encoding, Everything, Refer, find), freed heap memory goes back to
#: the system when the process holds more than this many MB (0: only the periodic sweep).
TRIM_ABOVE_MB: int = _env_int("SAMCLIP_TRIM_ABOVE_MB", 2560)
#: Everything draws the masks found so far (about every 0.4 s) while SAM's grid is decoded;
#: SAMCLIP_EVERYTHING_PARTIALS=0 sends them only when all are found.
EVERYTHING_PARTIALS: bool = _env_flag("SAMCLIP_EVERYTHING_PARTIALS", True)
#: Also serve the public API (demo/api.py) as MCP tools at /gradio_api/mcp/ (like
#: `python app.py --mcp`; needs `gradio[mcp]`). SAMCLIP_MCP=1 turns it on (e.g. on a Space).
MCP_SERVER: bool = _env_flag("SAMCLIP_MCP", False)
#: A session's image set (the Dataset panel): at most this many images, and this much disk
#: (images, labels, thumbnails, exports) in MB; uploads past either are refused with a message.
SET_MAX_IMAGES: int = _env_int("SAMCLIP_SET_MAX_IMAGES", 500)
SET_DISK_MB: int = _env_int("SAMCLIP_SET_DISK_MB", 500)
#: "Apply to all" runs of every session share this many workers, one image at a time each,
#: taking turns between sessions (a set never holds the machine for long stretches).
SET_JOB_WORKERS: int = _env_int("SAMCLIP_SET_JOB_WORKERS", 1)
