"""Parent side: start a fresh ``benchmarks.worker``, sample its RSS and CPU, read its result."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

from benchmarks import REPO
from benchmarks.worker import MARK

log = logging.getLogger(__name__)


@dataclass
class Sample:
    t_s: float
    rss_bytes: int
    cpu_pct: float  # percent of one core


@dataclass
class ChildResult:
    result: dict[str, Any]
    samples: list[Sample] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.result.get("ok"))

    @property
    def error(self) -> str:
        return str(self.result.get("error", ""))


def child_env(threads: int) -> dict[str, str]:
    """Environment of a worker: repo importable, every thread pool pinned to ``threads``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMEXPR_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _parse(stdout: str, stderr: str, rc: int) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARK):
            try:
                value = json.loads(line[len(MARK):])
                return value if isinstance(value, dict) else {"ok": False, "error": "bad result"}
            except json.JSONDecodeError:
                break
    tail = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    reason = tail[-1][:300] if tail else "no output"
    return {"ok": False, "error": f"worker exited {rc}: {reason}"}


def run_child(
    argv: Sequence[str],
    threads: int,
    timeout_s: float,
    interval_s: float = 0.05,
    on_tick: Callable[[Sample], None] | None = None,
) -> ChildResult:
    """Run ``python -m benchmarks.worker ARGV...``; sample it every ``interval_s`` seconds."""
    cmd = [sys.executable, "-m", "benchmarks.worker", *argv]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=str(REPO),
                                env=child_env(threads), text=True)
        samples: list[Sample] = []
        try:
            ps = psutil.Process(proc.pid)
            ps.cpu_percent(None)
        except psutil.Error:
            ps = None
        try:
            while proc.poll() is None:
                if time.monotonic() - t0 > timeout_s:
                    proc.kill()
                    proc.wait()
                    return ChildResult({"ok": False, "error": f"timed out after {timeout_s:.0f} s"},
                                       samples, time.monotonic() - t0)
                time.sleep(interval_s)
                if ps is None:
                    continue
                try:
                    s = Sample(time.monotonic() - t0, int(ps.memory_info().rss),
                               float(ps.cpu_percent(None)))
                except psutil.Error:
                    continue
                if s.rss_bytes == 0:  # exited, not yet reaped
                    continue
                samples.append(s)
                if on_tick is not None:
                    on_tick(s)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        wall = time.monotonic() - t0
        out.seek(0)
        err.seek(0)
        result = _parse(out.read(), err.read(), proc.returncode)
    if not result.get("ok"):
        log.warning("worker %s failed: %s", " ".join(argv[:1]), result.get("error"))
    return ChildResult(result, samples, wall)
