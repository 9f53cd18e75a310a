"""Shared settings and the memo of child runs: each (model, threads, arena) runs once per report."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.children import ChildResult, run_child
from benchmarks.inputs import speech_windows
from benchmarks.variants import Variant

log = logging.getLogger(__name__)

DISTINCT_WINDOWS = 8


@dataclass
class Settings:
    out: Path
    quick: bool = False
    max_threads: int = 1
    windows: int = 30  # timed windows per latency run
    warmup: int = 2
    ram_windows: int = 20
    thermal_s: float = 120.0
    gemm_size: int = 2048
    gemm_repeats: int = 5
    child_timeout_s: float = 900.0
    thermal_root: Path | None = Path("/sys/class/thermal")
    cpu_root: Path = Path("/sys/devices/system/cpu")
    e2e_idle_s: float = 20.0
    thermal_model: str | None = None

    @property
    def threads(self) -> list[int]:
        return list(range(1, self.max_threads + 1))

    @classmethod
    def make(cls, out: Path, quick: bool, max_threads: int, duration: float | None) -> Settings:
        if quick:
            s = cls(out=out, quick=True, max_threads=max_threads, windows=3, warmup=0,
                    ram_windows=3, thermal_s=5.0, gemm_size=2048, gemm_repeats=2,
                    child_timeout_s=300.0, e2e_idle_s=4.0)
        else:
            s = cls(out=out, quick=False, max_threads=max_threads)
        if duration is not None:
            s.thermal_s = duration
        return s


@dataclass
class Runs:
    """Runs each (variant, threads, arena) child at most once and keeps its result."""

    settings: Settings
    results: dict[tuple[str, int, bool, bool], ChildResult] = field(default_factory=dict)
    _window_files: dict[float, Path] = field(default_factory=dict)

    def windows_file(self, window_s: float) -> Path:
        if window_s not in self._window_files:
            path = self.settings.out / "work" / f"speech-{window_s:g}s.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, np.stack(speech_windows(DISTINCT_WINDOWS, window_s)))
            self._window_files[window_s] = path
        return self._window_files[window_s]

    def get(self, v: Variant, threads: int, arena: bool = True,
            low_memory: bool = False) -> ChildResult:
        key = (v.name, threads, arena, low_memory)
        if key in self.results:
            return self.results[key]
        s = self.settings
        n = max(s.windows, s.ram_windows) if threads == 1 else s.windows
        argv = ["run", "--spec", json.dumps(v.spec()), "--threads", str(threads),
                "--arena", str(int(arena)), "--low-memory", str(int(low_memory)),
                "--windows", str(n), "--warmup", str(s.warmup),
                "--windows-file", str(self.windows_file(v.window_s))]
        log.info("measuring %s: %d thread(s), arena %s%s, %d windows", v.name, threads,
                 "on" if arena else "off", ", low memory" if low_memory else "", n)
        res = run_child(argv, threads, s.child_timeout_s)
        self.results[key] = res
        return res
