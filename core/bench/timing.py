"""The one timer of the benchmarks, and what the machine is (timings mean little without it).

Every benchmark names the CPU (model, core count, AMX / AVX512-BF16 / AVX2 flags): the same
code runs 4x faster on a CPU with AMX than on one without, so numbers are only comparable
on the same CPU and within one run.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of `fn()` in seconds over `repeats` calls after `warmup` untimed calls."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine_load() -> float:
    """1-minute load average (timings on a shared machine are only comparable within one run)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


@dataclass(frozen=True)
class CpuInfo:
    """The CPU the numbers come from: model name, usable cores and the flags that matter for speed."""

    model: str
    cores: int
    amx: bool
    avx512_bf16: bool
    avx512f: bool
    avx2: bool

    @property
    def flags_text(self) -> str:
        """"AMX yes, AVX512-BF16 no, AVX-512 yes, AVX2 yes"."""
        def yes(v: bool) -> str:
            return "yes" if v else "no"

        return (f"AMX {yes(self.amx)}, AVX512-BF16 {yes(self.avx512_bf16)}, AVX-512 {yes(self.avx512f)}, "
                f"AVX2 {yes(self.avx2)}")

    def describe(self) -> str:
        """One line for tables: model, cores and flags."""
        return f"{self.model}, {self.cores} cores ({self.flags_text})"


def cpu_info(cpuinfo: str | None = None) -> CpuInfo:
    """Read /proc/cpuinfo (or the given text); elsewhere the platform's processor name, no flags."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    model, flags = platform.processor() or platform.machine(), set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return CpuInfo(model=model, cores=cores, amx="amx_bf16" in flags or "amx_tile" in flags,
                   avx512_bf16="avx512_bf16" in flags, avx512f="avx512f" in flags, avx2="avx2" in flags)
