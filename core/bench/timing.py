"""The one timer of the benchmarks, and what the machine is (timings mean little without it).

Every benchmark names the CPU (model, core count, AMX / AVX512-BF16 / AVX2 flags): the same
code runs 4x faster on a CPU with AMX than on one without, so numbers are only comparable
on the same CPU and within one run. The CPU is read by `core.sam.cpu` (re-exported here).
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

from core.sam.cpu import CpuInfo, cpu_info, load_average

__all__ = ["CpuInfo", "cpu_info", "machine_load", "median_seconds"]


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
    load = load_average()
    return float("nan") if load is None else round(load, 2)
