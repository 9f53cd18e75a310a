"""Memory budget: watch RSS (psutil) and shed load above the budget instead of being killed.

Above ``budgets.memory.rss_mb`` the daemon's window gate says no (windows are skipped and
counted) until RSS is back under the budget; each such episode is logged once. On glibc the
allocator is also asked to hand freed memory back (``malloc_trim``) and to keep few per-thread
arenas (``M_ARENA_MAX``), which together with onnxruntime's ``arena: false`` keeps RSS flat.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import time
from collections.abc import Callable

import psutil

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc mallopt parameters
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_MiB = 1024 * 1024


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, looked up once (find_library runs ldconfig: a subprocess, while memory is tight)."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    return lib if hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else None


def limit_malloc_arenas(count: int = 2) -> bool:
    """Cap glibc's per-thread malloc arenas (each can hold tens of MiB); False if not glibc."""
    lib = _libc()
    if lib is None:
        return False
    return bool(lib.mallopt(M_ARENA_MAX, count))


def release_large_buffers(threshold: int = 64 * 1024) -> bool:
    """Serve buffers over ``threshold`` bytes by mmap, so a freed one is returned at once.

    glibc otherwise raises its mmap threshold after large frees (up to 32 MiB) and keeps
    activation-sized buffers on the heap: measured, ~50 MiB of DistilHuBERT's activations
    stayed resident between windows. False if this is not glibc.
    """
    lib = _libc()
    if lib is None:
        return False
    return bool(lib.mallopt(M_MMAP_THRESHOLD, threshold)) and bool(
        lib.mallopt(M_TRIM_THRESHOLD, 2 * threshold))


def trim_heap() -> bool:
    """Return freed heap pages to the kernel (glibc ``malloc_trim(0)``); False if not glibc."""
    lib = _libc()
    if lib is None:
        return False
    return bool(lib.malloc_trim(0))


def process_rss_mb() -> float:
    """Resident set size of this process in MiB."""
    return float(psutil.Process().memory_info().rss) / _MiB


class MemoryGuard:
    """Answers "may I run another window?" against an RSS budget in MiB.

    RSS is sampled at most every ``check_every_s`` seconds (psutil reads /proc, cheap but not
    free). ``rss_fn`` replaces the real reading in tests.
    """

    def __init__(
        self,
        budget_mb: float,
        rss_fn: Callable[[], float] | None = None,
        check_every_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget_mb = budget_mb
        self._rss_fn = rss_fn or process_rss_mb
        self.check_every_s = check_every_s
        self._clock = clock
        self._checked = -float("inf")
        self.rss_mb = self._rss_fn()
        self.peak_mb = self.rss_mb
        self.over = False
        self.episodes = 0
        self.shed = 0  # windows refused because of memory

    def sample(self, force: bool = False) -> float:
        now = self._clock()
        if force or now - self._checked >= self.check_every_s:
            self._checked = now
            self.rss_mb = self._rss_fn()
            self.peak_mb = max(self.peak_mb, self.rss_mb)
        return self.rss_mb

    def ok(self) -> bool:
        """True while RSS is within budget; logs the start and end of each over-budget episode."""
        rss = self.sample()
        if rss > self.budget_mb and not self.over:
            trim_heap()  # maybe freed memory is only being held by the allocator
            rss = self.sample(force=True)
        if rss > self.budget_mb:
            if not self.over:
                self.over = True
                self.episodes += 1
                log.warning("RSS %.0f MiB is over the %.0f MiB budget: skipping windows until "
                            "it drops", rss, self.budget_mb)
            self.shed += 1
            return False
        if self.over:
            self.over = False
            log.warning("RSS %.0f MiB is back under the %.0f MiB budget (%d windows skipped so "
                        "far)", rss, self.budget_mb, self.shed)
        return True

    def stats(self) -> dict[str, float | int | bool]:
        return {
            "rss_mb": round(self.sample(), 1),
            "rss_peak_mb": round(self.peak_mb, 1),
            "rss_budget_mb": self.budget_mb,
            "memory_over_budget": self.over,
            "windows_shed_memory": self.shed,
        }
