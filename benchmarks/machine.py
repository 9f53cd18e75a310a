"""Facts about the machine a report was measured on (no figure without its context)."""

from __future__ import annotations

import logging
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.units import q, val

log = logging.getLogger(__name__)


def _cpuinfo(path: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """First processor's fields of /proc/cpuinfo (x86 ``model name``/``flags``, Arm)."""
    out: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, _, value = line.partition(":")
        key = key.strip()
        if key not in out:
            out[key] = value.strip()
    return out


def _device_tree_model() -> str | None:
    for p in (Path("/proc/device-tree/model"), Path("/sys/firmware/devicetree/base/model")):
        try:
            return p.read_bytes().rstrip(b"\x00").decode("utf-8", errors="replace")
        except OSError:
            continue
    return None


def _mem_total_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # psutil is a core dependency; this is only a guard
        return None


def _version(dist: str) -> str | None:
    """Installed version of a distribution, without importing it (torch takes seconds)."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.partition("=")[2].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def load_average() -> dict[str, Any]:
    """1-minute load average (runnable tasks): other work on the machine skews timings."""
    try:
        return q(os.getloadavg()[0], "tasks", 2)
    except OSError:
        return q(None, "tasks")


def was_busy(machine: dict[str, Any]) -> bool:
    """The report's "busy machine" rule: a 1-min load average before the run above half the
    usable cores, or other processes using more than a quarter of a core during it."""
    cores = val(machine.get("usable_cores")) or 1.0
    load = val(machine.get("load_average_start")) or 0.0  # the end's counts the benchmark
    other = val(machine.get("other_processes_cpu"))
    return load > 0.5 * cores or (other is not None and other > 0.25)


class OtherWork:
    """CPU used by other processes while the benchmark runs (machine busy time minus this
    process and its waited-for children), in cores on average: contention the load average
    misses between its two readings, without the benchmark's own load that it counts."""

    def __init__(self) -> None:
        self._start = self._now()

    @staticmethod
    def _now() -> tuple[float, float, float]:
        import resource
        import time

        import psutil

        t = psutil.cpu_times()
        busy = sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq"))
        own = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            r = resource.getrusage(who)
            own += r.ru_utime + r.ru_stime
        return busy, own, time.monotonic()

    def cores(self) -> dict[str, Any]:
        (b0, o0, t0), (b1, o1, t1) = self._start, self._now()
        if t1 - t0 <= 0:
            return q(None, "cores")
        return q(max(0.0, (b1 - b0) - (o1 - o0)) / (t1 - t0), "cores", 2)


def machine_facts() -> dict[str, Any]:
    """CPU model and flags, cores, RAM, OS, Python and library versions."""
    info = _cpuinfo()
    flags_text = info.get("flags") or info.get("Features") or ""
    flags = sorted(set(flags_text.split()))
    model = (
        info.get("model name") or _device_tree_model() or info.get("Hardware")
        or info.get("CPU part") or platform.processor() or "unknown"
    )
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "fma", "neon", "asimd",
                        "asimddp", "i8mm", "sve") if f in flags]
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {
        "hostname": platform.node(),
        "cpu_model": model,
        "board": _device_tree_model(),
        "arch": platform.machine(),
        "cpu_flags": flags,
        "simd_flags": simd,
        "logical_cores": q(os.cpu_count() or 1, "count"),
        "usable_cores": q(usable, "count"),
        "ram_total": q(None if (ram := _mem_total_bytes()) is None else ram / 2**20, "MiB", 1),
        "os": _os_release(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "onnxruntime": _version("onnxruntime"),
        "numpy": _version("numpy"),
        "onnx": _version("onnx"),
        "torch": _version("torch"),
    }
