"""Which precision SAM's fast path runs in, and why (`PrecisionChoice`).

"auto" on a CPU: a CPU without native bfloat16 (no AVX512-BF16/AMX flag) runs float32 with no
measurement. A CPU with the flag times the image encoder once per candidate ("fp32", "bf16")
and keeps the faster: the flag alone is not enough (on a Xeon with AVX512-BF16 but no AMX,
bf16 is slower: vit_t encoder 0.84 s vs 0.63 s fp32). The decision is remembered in
``config.CACHE_DIR / "sam_precision.json"``, keyed by CPU model, flags, torch version,
threads and SAM variant, so the next start does not measure again. On a GPU "auto" follows
the device's support (`core.sam.fast_sam.best_dtype`). Explicit "fp32"/"bf16"/"fp16" are
taken as given.

This module imports no torch: the timing function comes from the caller
(`core.sam.fast_sam.encoder_seconds` in `core.models.load_sam`).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from core import config

#: Where a decision came from: timed now, read from the cache file, CPU/GPU capability alone,
#: asked for by name, or the SAM variant's own policy (core.sam.variants).
SOURCES = ("measured", "cached", "flags", "explicit", "variant")
#: What "auto" times on a CPU with native bfloat16, in order of preference on a tie.
CPU_CANDIDATES = ("fp32", "bf16")
_ATTR = "_samclip_precision"


@dataclass(frozen=True)
class PrecisionChoice:
    """The fast path's image-encoder precision: dtype name ("fp32" | "bf16" | "fp16"), its
    source (one of `SOURCES`) and, when timed, seconds per encoder probe pass per candidate."""

    dtype: str
    source: str
    seconds: dict = field(default_factory=dict)

    def describe(self) -> str:
        """"bf16 (measured: fp32 0.630 s, bf16 0.840 s)", or "fp32 (flags)"."""
        timed = ", ".join(f"{k} {v:.3f} s" for k, v in self.seconds.items())
        return f"{self.dtype} ({self.source}{': ' + timed if timed else ''})"

    def to_json(self) -> dict:
        return {"dtype": self.dtype, "source": self.source, "seconds": dict(self.seconds)}


def attach(sam, choice: PrecisionChoice) -> None:
    """Remember on the SAM module which precision its fast path was given, and why."""
    sam.__dict__[_ATTR] = choice


def precision_of(sam) -> PrecisionChoice | None:
    """The `PrecisionChoice` `core.models.load_sam` made for `sam` (None: stock or built elsewhere)."""
    return getattr(sam, "__dict__", {}).get(_ATTR)


# ----------------------------------------------------------------------------- the rule


def fastest(candidates: Sequence[str], time_fn: Callable[[str], float]) -> PrecisionChoice:
    """Time every candidate with `time_fn(name) -> seconds`; the fastest wins (ties: the first)."""
    seconds = {name: float(time_fn(name)) for name in candidates}
    best = min(candidates, key=lambda name: (seconds[name], candidates.index(name)))
    return PrecisionChoice(best, "measured", seconds)


def choose_cpu_precision(key: str, *, capable: bool, time_fn: Callable[[str], float],
                         candidates: Sequence[str] = CPU_CANDIDATES) -> PrecisionChoice:
    """"auto" on a CPU: fp32 without native bf16 (`capable` False; nothing timed), else the
    cached decision for `key`, else `fastest(candidates, time_fn)`, written to the cache."""
    if not capable:
        return PrecisionChoice("fp32", "flags")
    cached = read_cached(key)
    if cached is not None:
        return cached
    choice = fastest(tuple(candidates), time_fn)
    write_cached(key, choice)
    return choice


# ----------------------------------------------------------------------------- the cache


def cpu_model_name() -> str:
    """The CPU's model name ("Intel(R) Xeon(R) ..."), from /proc/cpuinfo or the platform."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cache_key(variant: str, *, cpu: str, flags: Iterable[str], torch_version: str, threads: int) -> str:
    """"<cpu>|flags=<sha1 of the sorted flags, 12 hex>|torch=<version>|threads=<n>|<variant>"."""
    digest = hashlib.sha1(" ".join(sorted(flags)).encode()).hexdigest()[:12]
    return f"{cpu}|flags={digest}|torch={torch_version}|threads={threads}|{variant}"


def cache_file() -> Path:
    """The JSON file of remembered decisions: {key: PrecisionChoice.to_json()}."""
    return config.CACHE_DIR / "sam_precision.json"


def _read_all() -> dict:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_cached(key: str) -> PrecisionChoice | None:
    """The decision remembered for `key` (source "cached"), None when absent or unreadable."""
    entry = _read_all().get(key)
    try:
        return PrecisionChoice(str(entry["dtype"]), "cached", {str(k): float(v) for k, v in entry["seconds"].items()})
    except (TypeError, KeyError, ValueError, AttributeError):
        return None


def write_cached(key: str, choice: PrecisionChoice) -> None:
    """Remember `choice` for `key` (atomic replace; a read-only cache only costs a new measurement)."""
    path = cache_file()
    data = {**_read_all(), key: choice.to_json()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass
