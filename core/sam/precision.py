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
with fp32 on the probe (`core.sam.fast_sam.decoder_outputs_agree`). On a 2-core AMX Xeon
(vit_t) bf16 is faster for batches (automatic masks 2.2 vs 3.4 s) but slower for one click
(20 vs 14 ms), so the two workloads may run in different precisions. The decisions are
cached with the encoder's; an entry without them (older cache) gets them measured once.

This module imports no torch: the timing functions come from the caller
(`core.sam.fast_sam.encoder_seconds` and `core.sam.fast_sam.DecoderProbe` in
`core.models.sam_precision_choice`).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

from core import config

#: Where a decision came from: timed now, read from the cache file, CPU/GPU capability alone,
#: asked for by name, or the SAM variant's own policy (core.sam.variants).
SOURCES = ("measured", "cached", "flags", "explicit", "variant")
#: What "auto" times on a CPU with native bfloat16, in order of preference on a tie.
CPU_CANDIDATES = ("fp32", "bf16")
_ATTR = "_samclip_precision"


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

    def decoder_dtype(self, workload: str) -> str:
        """The mask decoder's dtype name for `workload` ("click" | "batch"); "fp32" when not chosen."""
        return self.decoder.get(workload, "fp32")

    def describe(self) -> str:
        """"bf16 (measured: fp32 0.630 s, bf16 0.840 s); decoder: clicks fp32 (14.1 vs 20.0 ms),
        automatic masks bf16 (35.0 vs 22.0 ms)" (decoder times fp32 vs bf16), or "fp32 (flags)"."""
        timed = ", ".join(f"{k} {v:.3f} s" for k, v in self.seconds.items())
        text = f"{self.dtype} ({self.source}{': ' + timed if timed else ''})"
        parts = [self._describe_decoder(w) for w in DECODER_WORKLOADS if w in self.decoder]
        return text + ("; decoder: " + ", ".join(parts) if parts else "")

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
        return {"dtype": self.dtype, "source": self.source, "seconds": dict(self.seconds),
                "decoder": dict(self.decoder),
                "decoder_seconds": {w: dict(s) for w, s in self.decoder_seconds.items()}}


def attach(sam, choice: PrecisionChoice) -> None:
    """Remember on the SAM module which precision its fast path was given, and why."""
    sam.__dict__[_ATTR] = choice


def precision_of(sam) -> PrecisionChoice | None:
    """The `PrecisionChoice` `core.models.load_sam` made for `sam` (None: stock or built elsewhere)."""
    return getattr(sam, "__dict__", {}).get(_ATTR)


# ----------------------------------------------------------------------------- the rule


def fastest(candidates: Sequence[str], time_fn: Callable[[str], float], rounds: int = 2) -> PrecisionChoice:
    """Time every candidate with `time_fn(name) -> seconds`, `rounds` times in alternating order
    (A B, then B A: a burst of other work on the machine, or a drift, then slows both), keeping
    each one's best; the fastest wins (ties: the first). The decision is cached for good, so a
    single slowed pass must not decide it."""
    seconds: dict = {}
    for r in range(max(1, rounds)):
        for name in (candidates if r % 2 == 0 else tuple(reversed(candidates))):
            seconds[name] = min(seconds.get(name, float("inf")), float(time_fn(name)))
    seconds = {name: seconds[name] for name in candidates}
    best = min(candidates, key=lambda name: (seconds[name], candidates.index(name)))
    return PrecisionChoice(best, "measured", seconds)


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
                         decoder_agrees: Callable[[str, str], bool] | None = None) -> PrecisionChoice:
    """"auto" on a CPU: fp32 without native bf16 (`capable` False; nothing timed), else the
    cached decision for `key`, else `fastest(candidates, time_fn)`, written to the cache.

    With `decoder_time_fn` (and `decoder_agrees`, see `choose_decoder_precision`) the mask
    decoder is chosen too, on a capable CPU: from the cache, or measured when the cached entry
    has no decoder fields (an older cache; the entry is then rewritten)."""
    if not capable:
        return PrecisionChoice("fp32", "flags")
    choice = read_cached(key)
    measured = choice is None
    if measured:
        choice = fastest(tuple(candidates), time_fn)
    if decoder_time_fn is not None and not choice.decoder:
        if decoder_agrees is None:
            raise TypeError("choose_cpu_precision: decoder_time_fn needs decoder_agrees")
        decoder, seconds = choose_decoder_precision(decoder_time_fn, decoder_agrees, candidates=tuple(candidates))
        choice = replace(choice, decoder=decoder, decoder_seconds=seconds)
        measured = True
    if measured:
        write_cached(key, choice)
    return choice


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
        return PrecisionChoice(str(entry["dtype"]), "cached", {str(k): float(v) for k, v in entry["seconds"].items()},
                               {str(w): str(n) for w, n in entry.get("decoder", {}).items()},
                               {str(w): {str(k): float(v) for k, v in s.items()}
                                for w, s in entry.get("decoder_seconds", {}).items()})
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
