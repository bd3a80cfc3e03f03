"""The one reader of this machine's CPU facts: model name, flags, usable cores, load, threads.

Everything that needs to know what the CPU is reads it here: the SAM fast path (bfloat16 or
not, ``core.sam.fast_sam.best_dtype``), the precision cache key (``core.models``), the
benchmarks' CPU line (``core.bench.timing`` re-exports `cpu_info`) and the banner. /proc/cpuinfo
is parsed by `parse_cpuinfo` only.

This module imports no torch at the top (`set_threads` and the non-Linux bf16 probe import it).
"""
from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

CPUINFO = Path("/proc/cpuinfo")


def read_cpuinfo() -> str:
    """The text of /proc/cpuinfo ("" where there is none)."""
    try:
        return CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def parse_cpuinfo(text: str) -> tuple[str, frozenset]:
    """(model name, flags) of the first CPU described in /proc/cpuinfo-style `text`;
    the platform's processor name and no flags where the text names none."""
    model, flags = "", None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip() and not model:
            model = value.strip()
        elif key == "flags" and flags is None:
            flags = frozenset(value.split())
    return model or platform.processor() or platform.machine() or "unknown CPU", flags or frozenset()


@functools.lru_cache(maxsize=1)
def _this_cpu() -> tuple[str, frozenset]:
    return parse_cpuinfo(read_cpuinfo())


def cpu_flags() -> frozenset:
    """CPU feature flags of this machine (empty set where unreadable)."""
    return _this_cpu()[1]


def cpu_model_name() -> str:
    """The CPU's model name ("Intel(R) Xeon(R) ..."), from /proc/cpuinfo or the platform."""
    return _this_cpu()[0]


def available_cpus() -> int:
    """Number of CPUs this process may run on (cgroup/affinity aware where the OS says so)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def load_average() -> Optional[float]:
    """The 1-minute load average (runnable processes), None where the OS has none."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bfloat16 matrix instructions (AVX512-BF16 or AMX-BF16).

    /proc/cpuinfo flags first, then oneDNN's own probe (covers non-Linux hosts). Without
    native support bf16 is emulated and slower than float32.
    """
    flags = cpu_flags()
    if flags:
        return bool({"avx512_bf16", "amx_bf16"} & flags)
    import torch

    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except Exception:  # pragma: no cover - depends on the torch build
        return False


def set_threads(n: Optional[int] = None) -> int:
    """Set torch's intra-op threads to ``n`` (default: the CPUs available); returns the count used."""
    import torch

    n = available_cpus() if n is None else int(n)
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


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
    """This CPU (or the one /proc/cpuinfo-style text `cpuinfo` describes) as a `CpuInfo`."""
    model, flags = _this_cpu() if cpuinfo is None else parse_cpuinfo(cpuinfo)
    return CpuInfo(model=model, cores=available_cpus(), amx="amx_bf16" in flags or "amx_tile" in flags,
                   avx512_bf16="avx512_bf16" in flags, avx512f="avx512f" in flags, avx2="avx2" in flags)
