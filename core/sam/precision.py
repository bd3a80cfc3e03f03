"""Which precision SAM's fast path runs in, and why (`PrecisionChoice`).

"auto" on a CPU: a CPU without native bfloat16 (no AVX512-BF16/AMX flag) runs float32 with no
measurement. A CPU with the flag times the image encoder per candidate ("fp32", "bf16"; in
A B B A order, each keeping its best pass, so that other work on the machine during one pass
does not decide) and keeps the faster: the flag alone is not enough (on a Xeon with AVX512-BF16 but no AMX,
bf16 is slower: vit_t encoder 0.84 s vs 0.63 s fp32). The decision is remembered in
``config.CACHE_DIR / "sam_precision.json"``, keyed by CPU model, flags, torch version,
threads and SAM variant, so the next start does not measure again. On a GPU "auto" follows
the device's support (`core.sam.fast_sam.best_dtype`). Explicit "fp32"/"bf16"/"fp16" are
taken as given.

The mask decoder: float32 unless "auto" on a CPU with native bf16, where it is timed in
fp32 and bf16 per workload (`DECODER_WORKLOADS`: one click, one batch of the automatic
masks' prompts) and bf16 is kept for a workload only when faster and its outputs agree
with fp32 on the probe (`core.sam.probes.decoder_outputs_agree`). On a 2-core AMX Xeon
(vit_t) bf16 is faster for batches (automatic masks 2.2 vs 3.4 s) but slower for one click
(20 vs 14 ms), so the two workloads may run in different precisions. The decisions are
cached with the encoder's; an entry without them (older cache) gets them measured once.

This module imports no torch: the timing functions come from the caller
(`core.sam.probes.encoder_seconds` and `core.sam.probes.DecoderProbe` in
`core.models.sam_precision_choice`).
"""
from __future__ import annotations

import hashlib
import json
import os
import statistics
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from core import config
from core.sam.cpu import available_cpus, load_average

#: Where a decision came from: timed now, read from the cache file, CPU/GPU capability alone,
#: asked for by name, or the SAM variant's own policy (core.sam.variants).
SOURCES = ("measured", "cached", "flags", "explicit", "variant")
#: What "auto" times on a CPU with native bfloat16, in order of preference on a tie.
CPU_CANDIDATES = ("fp32", "bf16")


#: A measurement is trusted when the machine was idle enough: a 1-minute load average per usable
#: CPU at most MAX_LOAD_PER_CPU when it started, and this process got at least MIN_CPU_SHARE of
#: its threads' time while it ran (process CPU seconds / (wall seconds * threads)).
MAX_LOAD_PER_CPU = 0.5
MIN_CPU_SHARE = 0.5
#: Click times seen in use this many times faster or slower than the cached probe's mean the
#: cached measurement no longer describes this machine (measured again at the next start),
#: once MIN_OBSERVATIONS clicks were seen.
DISAGREEMENT = 2.0
MIN_OBSERVATIONS = 5


@dataclass(frozen=True)
class Conditions:
    """How busy the machine was while a choice was measured.

    load: 1-minute load average when timing started (None where the OS has none); cpus: CPUs
    this process may use; cpu_share: process CPU seconds / (wall seconds * cpus) while timing
    (None when not measured)."""

    load: Optional[float]
    cpus: int
    cpu_share: Optional[float] = None

    def busy(self) -> str:
        """Why the measurement cannot be trusted ("" when the machine was idle enough)."""
        if self.load is not None and self.load > MAX_LOAD_PER_CPU * self.cpus:
            return f"measured under load {self.load:.1f} on {self.cpus} CPUs"
        if self.cpu_share is not None and self.cpu_share < MIN_CPU_SHARE:
            return f"measured while other work took the CPUs (this process got {self.cpu_share:.0%} of them)"
        return ""

    def to_json(self) -> dict:
        return {"load": self.load, "cpus": self.cpus, "cpu_share": self.cpu_share}

    @classmethod
    def from_json(cls, data: dict) -> "Conditions":
        opt = lambda v: None if v is None else float(v)  # noqa: E731
        return cls(opt(data["load"]), int(data["cpus"]), opt(data.get("cpu_share")))


@dataclass(frozen=True)
class Clock:
    """Where timing conditions come from (tests pass fakes): wall and process-CPU seconds, the
    load average and the usable CPUs."""

    wall: Callable[[], float] = time.perf_counter
    cpu: Callable[[], float] = time.process_time
    load: Callable[[], Optional[float]] = load_average
    cpus: Callable[[], int] = available_cpus


#: The clock measurements read unless one is passed (tests replace it with a fake).
DEFAULT_CLOCK = Clock()


def timed_conditions(fn: Callable[[], object], clock: Optional[Clock] = None):
    """(fn(), `Conditions` while it ran), read from `clock` (default `DEFAULT_CLOCK`)."""
    clock = clock or DEFAULT_CLOCK
    load, cpus = clock.load(), clock.cpus()
    wall, cpu = clock.wall(), clock.cpu()
    result = fn()
    wall, cpu = clock.wall() - wall, clock.cpu() - cpu
    share = cpu / (wall * cpus) if wall > 0 else None
    return result, Conditions(None if load is None else round(load, 2), cpus,
                              None if share is None else round(share, 3))


#: The mask decoder's workloads, with their names in `PrecisionChoice.describe`.
DECODER_WORKLOADS = {"click": "clicks", "batch": "automatic masks"}


@dataclass(frozen=True)
class PrecisionChoice:
    """The fast path's precisions: the image encoder's dtype name ("fp32" | "bf16" | "fp16"), its
    source (one of `SOURCES`) and, when timed, seconds per encoder probe pass per candidate.

    decoder: the mask decoder's dtype name per workload ({"click": "fp32", "batch": "bf16"});
    a workload not named runs float32. decoder_seconds: {workload: {dtype name: seconds per
    decoder call}} when timed.
    """

    dtype: str
    source: str
    seconds: dict = field(default_factory=dict)
    decoder: dict = field(default_factory=dict)
    decoder_seconds: dict = field(default_factory=dict)
    #: How busy the machine was while it was measured (None: not measured, or an older cache).
    conditions: Optional[Conditions] = field(default=None, compare=False)
    #: Why the cached choice was not used and this one measured instead ("" when it was not).
    remeasured: str = field(default="", compare=False)
    #: Its key in the cache file, for `observe_click` ("" when not cached).
    key: str = field(default="", compare=False)

    def stale(self) -> str:
        """Why this measured or cached choice is not to be kept ("" when it is): it was measured
        under load, or has no record of the load (an older cache)."""
        if self.source not in ("measured", "cached"):
            return ""
        if self.conditions is None:
            return "no record of the machine's load when it was measured"
        return self.conditions.busy()

    def decoder_dtype(self, workload: str) -> str:
        """The mask decoder's dtype name for `workload` ("click" | "batch"); "fp32" when not chosen."""
        return self.decoder.get(workload, "fp32")

    def describe(self) -> str:
        """"bf16 (measured: fp32 0.630 s, bf16 0.840 s); decoder: clicks fp32 (14.1 vs 20.0 ms),
        automatic masks bf16 (35.0 vs 22.0 ms)" (decoder times fp32 vs bf16), or "fp32 (flags)"."""
        timed = ", ".join(f"{k} {v:.3f} s" for k, v in self.seconds.items())
        text = f"{self.dtype} ({self.source}{': ' + timed if timed else ''})"
        parts = [self._describe_decoder(w) for w in DECODER_WORKLOADS if w in self.decoder]
        text += "; decoder: " + ", ".join(parts) if parts else ""
        if self.remeasured:
            text += f"; measured again: the cached choice was stale ({self.remeasured})"
        if self.stale():
            text += f"; stale: {self.stale()}, so it will be measured again at the next start"
        return text

    def _describe_decoder(self, workload: str) -> str:
        chosen = self.decoder[workload]
        text = f"{DECODER_WORKLOADS[workload]} {chosen}"
        seconds = self.decoder_seconds.get(workload, {})
        if not seconds:
            return text
        text += " (" + " vs ".join(f"{v * 1e3:.1f}" for v in seconds.values()) + " ms"
        if min(seconds, key=seconds.get) != chosen:
            text += f"; {min(seconds, key=seconds.get)} disagreed"
        return text + ")"

    def to_json(self) -> dict:
        data = {"dtype": self.dtype, "source": self.source, "seconds": dict(self.seconds),
                "decoder": dict(self.decoder),
                "decoder_seconds": {w: dict(s) for w, s in self.decoder_seconds.items()}}
        if self.conditions is not None:
            data["conditions"] = self.conditions.to_json()
        return data


def attach(sam, choice: PrecisionChoice) -> None:
    """Record on a fast SAM (``core.sam.fast_decoder.FastSam.precision_choice``) which precision
    its fast path was given, and why."""
    sam.precision_choice = choice


def precision_of(sam) -> PrecisionChoice | None:
    """The `PrecisionChoice` `core.models.load_sam` made for `sam` (None: stock or built elsewhere)."""
    return getattr(sam, "precision_choice", None)


# ----------------------------------------------------------------------------- the rule


def fastest(candidates: Sequence[str], time_fn: Callable[[str], float], rounds: int = 2,
            clock: Optional[Clock] = None) -> PrecisionChoice:
    """Time every candidate with `time_fn(name) -> seconds`, `rounds` times in alternating order
    (A B, then B A: a burst of other work on the machine, or a drift, then slows both), keeping
    each one's best; the fastest wins (ties: the first). The decision is cached for good, so a
    single slowed pass must not decide it. The machine's load while timing is recorded
    (`Conditions`, read from `clock`)."""
    def run() -> dict:
        seconds: dict = {}
        for r in range(max(1, rounds)):
            for name in (candidates if r % 2 == 0 else tuple(reversed(candidates))):
                seconds[name] = min(seconds.get(name, float("inf")), float(time_fn(name)))
        return {name: seconds[name] for name in candidates}

    seconds, conditions = timed_conditions(run, clock)
    best = min(candidates, key=lambda name: (seconds[name], candidates.index(name)))
    return PrecisionChoice(best, "measured", seconds, conditions=conditions)


def choose_decoder_precision(time_fn: Callable[[str, str], float], agrees: Callable[[str, str], bool],
                             workloads: Iterable[str] = DECODER_WORKLOADS,
                             candidates: Sequence[str] = CPU_CANDIDATES) -> tuple[dict, dict]:
    """The mask decoder's precision per workload: the fastest candidate by `time_fn(workload,
    name) -> seconds`, kept only when `agrees(workload, name)` (its outputs match the first
    candidate's, fp32; not asked for the first). Returns ({workload: name}, {workload: {name: s}})."""
    chosen, seconds = {}, {}
    for workload in workloads:
        timed = fastest(tuple(candidates), lambda name: time_fn(workload, name)).seconds
        ranked = sorted(candidates, key=lambda name: (timed[name], candidates.index(name)))
        chosen[workload] = next((name for name in ranked
                                 if name == candidates[0] or agrees(workload, name)), candidates[0])
        seconds[workload] = timed
    return chosen, seconds


def choose_cpu_precision(key: str, *, capable: bool, time_fn: Callable[[str], float],
                         candidates: Sequence[str] = CPU_CANDIDATES,
                         decoder_time_fn: Callable[[str, str], float] | None = None,
                         decoder_agrees: Callable[[str, str], bool] | None = None,
                         clock: Optional[Clock] = None) -> PrecisionChoice:
    """"auto" on a CPU: fp32 without native bf16 (`capable` False; nothing timed), else the
    cached decision for `key`, else `fastest(candidates, time_fn)`, written to the cache.

    With `decoder_time_fn` (and `decoder_agrees`, see `choose_decoder_precision`) the mask
    decoder is chosen too, on a capable CPU: from the cache, or measured when the cached entry
    has no decoder fields (an older cache; the entry is then rewritten).

    A cached choice is measured again when it is stale (`PrecisionChoice.stale`: taken under
    load, or with no record of the load) or was marked so by `observe_click` (click times seen
    in use disagreed with it); the new choice says why (`remeasured`)."""
    if not capable:
        return PrecisionChoice("fp32", "flags")
    choice = read_cached(key)
    why = "" if choice is None else (_marked_stale(key) or choice.stale())
    if choice is None or why:
        choice = replace(fastest(tuple(candidates), time_fn, clock=clock), remeasured=why)
        if decoder_time_fn is not None:
            choice = _with_decoder(choice, decoder_time_fn, decoder_agrees, candidates, clock)
        write_cached(key, choice)
    elif decoder_time_fn is not None and not choice.decoder:
        choice = _with_decoder(choice, decoder_time_fn, decoder_agrees, candidates, clock)
        write_cached(key, choice)
    return replace(choice, key=key)


def _with_decoder(choice: PrecisionChoice, time_fn, agrees, candidates, clock: Optional[Clock]) -> PrecisionChoice:
    """`choice` with the mask decoder's precisions measured; the conditions cover both timings."""
    if agrees is None:
        raise TypeError("choose_cpu_precision: decoder_time_fn needs decoder_agrees")
    (decoder, seconds), conditions = timed_conditions(
        lambda: choose_decoder_precision(time_fn, agrees, candidates=tuple(candidates)), clock)
    if choice.conditions is not None and not conditions.busy():
        conditions = choice.conditions   # the encoder's timing: busy or not, it decides
    return replace(choice, decoder=decoder, decoder_seconds=seconds, conditions=conditions)


# ----------------------------------------------------------------------------- the cache


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
        conditions = entry.get("conditions")
        return PrecisionChoice(str(entry["dtype"]), "cached", {str(k): float(v) for k, v in entry["seconds"].items()},
                               {str(w): str(n) for w, n in entry.get("decoder", {}).items()},
                               {str(w): {str(k): float(v) for k, v in s.items()}
                                for w, s in entry.get("decoder_seconds", {}).items()},
                               None if conditions is None else Conditions.from_json(conditions))
    except (TypeError, KeyError, ValueError, AttributeError):
        return None


def _marked_stale(key: str) -> str:
    """The reason `observe_click` marked the entry `key` stale ("" when it did not)."""
    entry = _read_all().get(key)
    return str(entry.get("stale", "")) if isinstance(entry, dict) else ""


def mark_stale(key: str, reason: str) -> None:
    """Mark the cached entry `key` stale (measured again at the next start), saying why."""
    entry = _read_all().get(key)
    if isinstance(entry, dict):
        _write_entry(key, {**entry, "stale": reason})


# ----------------------------------------------------------------------------- times seen in use

_SEEN: dict = {}
_SEEN_LOCK = threading.Lock()


def observe_click(choice: Optional[PrecisionChoice], seconds: float) -> str:
    """Record one click decode (prompt encoder + mask decoder, `seconds`) of a SAM whose fast path
    `choice` made. Once `MIN_OBSERVATIONS` were seen, a median off the cached probe's click time
    by more than `DISAGREEMENT` times either way marks the cache entry stale (once) and returns
    why; "" otherwise (also for choices not from the cache file)."""
    if choice is None or not choice.key or choice.source not in ("measured", "cached"):
        return ""
    cached = choice.decoder_seconds.get("click", {}).get(choice.decoder_dtype("click"))
    if not cached:
        return ""
    with _SEEN_LOCK:
        seen = _SEEN.setdefault(choice.key, [])
        if seen is None:   # already marked
            return ""
        seen.append(float(seconds))
        if len(seen) < MIN_OBSERVATIONS:
            return ""
        median = statistics.median(seen[-4 * MIN_OBSERVATIONS:])
        if max(median / cached, cached / median) <= DISAGREEMENT:
            return ""
        _SEEN[choice.key] = None
    reason = (f"clicks take {median * 1e3:.0f} ms in use, the cached probe {cached * 1e3:.0f} ms")
    mark_stale(choice.key, reason)
    return reason


def write_cached(key: str, choice: PrecisionChoice) -> None:
    """Remember `choice` for `key` (atomic replace; a read-only cache only costs a new measurement)."""
    _write_entry(key, choice.to_json())


def _write_entry(key: str, entry: dict) -> None:
    path = cache_file()
    data = {**_read_all(), key: entry}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass
