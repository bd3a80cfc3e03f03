"""What the panels' callbacks give the UI (plain records, no gradio) and small helpers
they share: progress callbacks, time and file writing."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from demo.state import Session

Progress = Callable[[float, str], None]
#: Tiles of result galleries are at most this big.
TILE_SIDE = 192
#: A click in 'Everything' mode this close (display pixels) to a mask picks it.
PICK_RADIUS_DISPLAY = 8.0


def no_progress(fraction: float, note: str) -> None:
    """A progress callback that reports nothing."""


def metric_order(metric: str) -> str:
    """How scores of `metric` read: "higher is closer" (cosine) or "lower is closer" (l2)."""
    return "higher is closer" if metric == "cosine" else "lower is closer"


def plural(count: int, noun: str) -> str:
    """"1 automatic mask", "3 automatic masks" (English nouns that take an s)."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def ms_since(start: float) -> str:
    """"123 ms" since `start` (a time.perf_counter() value)."""
    return f"{(time.perf_counter() - start) * 1000:.0f} ms"


def put_file(path: Path, data: bytes | str) -> str:
    """Write `path` whole (a download being served never sees half a file); its path."""
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    tmp.replace(path)
    return str(path)


@dataclass
class Exports:
    """Files the download buttons offer (None: not available, `why` says why)."""

    cutout: str | None = None      # RGBA PNG of the selected object, cropped to its box
    mask_png: str | None = None    # the selected mask, 8-bit PNG at the original size
    mask_rle: str | None = None    # the selected mask as one COCO annotation (RLE) JSON
    coco: str | None = None        # all objects of the image as one COCO JSON document
    coco_selection_only: bool = False  # the COCO JSON holds the selection only (no 'Everything')
    why: str = "Select an object first."


@dataclass
class SegmentOut:
    """What a Segment-area callback gives the UI. canvas: a canvas message (JSON) or None
    when the canvas needs nothing new."""

    session: Session
    canvas: str | None
    info: str
    status: str
    exports: Exports = field(default_factory=Exports)


@dataclass
class PageOut:
    """One page of the large gallery for the UI: result tiles, the status, the results line
    ("Results 21-40 of 1,234 objects ..."), whether Previous / Next lead anywhere."""

    session: Session
    tiles: list
    status: str
    line: str
    has_prev: bool
    has_next: bool
