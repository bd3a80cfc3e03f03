"""What the panels share when they wire their events: the host record (session, status,
canvas, the Segment area's outputs), the concurrency groups, the error guard, helpers."""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import gradio as gr

from demo import settings as serving
from demo.context import AppContext, release_memory_above
from demo.errors import guard

# Fairness: each kind of work has its own concurrency group, so a click never waits in the
# queue behind another person's encoding or everything-mode run (the canvas's hover/click
# preview is a server function outside the queue; the segmenter's separate encoder/decoder
# locks keep it from waiting inside, too). None of these events is an API endpoint
# (api_visibility="private"): only the page calls them.
QUIET = {"show_progress": "hidden"}
PRIVATE = {"api_visibility": "private"}


def queues(status) -> dict[str, dict]:
    """Event options per kind of work: concurrency group, limit, progress display."""
    return {
        "light": {"concurrency_id": "light", "concurrency_limit": 4, **PRIVATE},
        "click": {"concurrency_id": "click", "concurrency_limit": serving.CLICK_WORKERS, **PRIVATE},
        "encoder": {"concurrency_id": "encoder", "concurrency_limit": 1, "show_progress": "minimal",
                    "show_progress_on": [status], **PRIVATE},
        "everything": {"concurrency_id": "everything", "concurrency_limit": 1, **PRIVATE},
        # a sentence on a prepared image costs its text only: it must not queue behind another
        # person's analysis (analyses of different images still run one at a time, in core)
        "refer": {"concurrency_id": "refer", "concurrency_limit": 3, **PRIVATE},
        "clip": {"concurrency_id": "clip", "concurrency_limit": 1, **PRIVATE},
        "browse": {"concurrency_id": "browse", "concurrency_limit": 2, **PRIVATE},   # pages: disk reads
        "exports": {"concurrency_id": "exports", "concurrency_limit": 2, **QUIET, **PRIVATE},
    }


@dataclass
class PanelHost:
    """What the panels share: callbacks, the session state, the status line, the canvas
    and the Segment panel's outputs (set by `segment.build`), the event options `q`."""

    ctx: AppContext
    cb: Any                    # demo.callbacks.Callbacks (which imports the panels)
    session: gr.State
    status: gr.Markdown
    gpu: Callable | None = None
    queries: dict = field(default_factory=dict)
    canvas: gr.components.Component | None = None
    seg_outputs: list = field(default_factory=list)
    segment_values: Callable | None = None
    after_segment: Callable | None = None    # chain the downloads after a Segment-area event
    q: dict = field(default_factory=dict)

    def heavy(self, fn: Callable, with_canvas: bool = False) -> Callable:
        """`fn` guarded (and wrapped by `gpu`, e.g. spaces.GPU, when given); when it ends with
        the process over `settings.TRIM_ABOVE_MB`, freed heap memory goes back to the system
        (many requests at once otherwise leave their scratch memory in glibc's heaps until
        the next sweep)."""
        return guard(trimmed(self.gpu(fn) if self.gpu else fn), self.status, self.canvas if with_canvas else None)

    def guard(self, fn: Callable, with_canvas: bool = False) -> Callable:
        return guard(fn, self.status, self.canvas if with_canvas else None)


def trimmed(fn: Callable) -> Callable:
    """`fn` (a function or a generator function) followed by
    `release_memory_above(settings.TRIM_ABOVE_MB)`."""
    def trim() -> None:
        release_memory_above(serving.TRIM_ABOVE_MB * 1024 * 1024)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            finally:
                trim()
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        finally:
            trim()
    return wrapper


def event_data(evt) -> dict:
    """The payload of a custom (canvas) event, {} when there is none."""
    data = getattr(evt, "_data", None)
    return data if isinstance(data, dict) else {}


def progress_adapter(progress: gr.Progress) -> Callable[[float, str], None]:
    """Adapt gr.Progress to the callbacks' progress(fraction, note)."""
    def report(fraction: float, note: str) -> None:
        try:
            progress(min(max(float(fraction), 0.0), 1.0), desc=note)
        except Exception:  # progress is cosmetic; never let it break a callback
            pass
    return report
