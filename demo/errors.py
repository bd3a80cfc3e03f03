"""How the UI shows failures: a sentence for a person, never a stack trace.

`guard` wraps every callback: an exception becomes a warning toast plus a line in the status
bar (and a notice on the canvas), the outputs stay as they were, and the session stays
usable; a result for an image that is no longer current (`Stale`) is dropped silently.
"""
from __future__ import annotations

import functools
import inspect
import json
import sys
import time
import traceback
from typing import Callable

import gradio as gr

from demo.context import ModelsUnavailable
from demo.state import Stale, UserError


def error_message(exc: BaseException) -> str:
    """A person-readable sentence for an exception (never a stack trace)."""
    if isinstance(exc, (UserError, ModelsUnavailable)):
        return str(exc)
    if isinstance(exc, (ValueError, FileNotFoundError)) and str(exc):
        return str(exc)[:600]
    if type(exc).__name__ == "WeightsNotFound":
        return str(exc)
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return (f"Something went wrong ({type(exc).__name__}{': ' + text if text else ''}). "
            "The details are in the server log; the session is still usable.")


def _failure(exc: Exception, status, canvas) -> dict:
    if isinstance(exc, Stale):
        return {status: gr.skip()}
    if not isinstance(exc, (UserError, ModelsUnavailable)):
        traceback.print_exc(file=sys.stderr)
    message = error_message(exc)
    gr.Warning(message)
    out = {status: f"⚠️ {message}"}
    if canvas is not None:
        out[canvas] = json.dumps({"seq": time.monotonic_ns(), "notice": message})
    return out


def guard(fn: Callable, status: gr.components.Component, canvas=None) -> Callable:
    """Wrap a callback (function or generator) so any exception becomes a warning toast and
    a status line (and a notice on the `canvas`, when given); a `Stale` result is dropped."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:  # every failure is shown, none escapes as a stack trace
                yield _failure(exc, status, canvas)
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # every failure is shown, none escapes as a stack trace
            return _failure(exc, status, canvas)
    return wrapper
