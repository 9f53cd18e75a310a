"""How a run stops: a stop request, SIGTERM/SIGINT/SIGHUP, and the hard deadline after a signal.

SIGHUP is a stop request like the others (a closed terminal, or ``kill -HUP``): edge-ser has no
reload; restart it to read a changed config. Before, SIGHUP's default action killed the process
with no flush, no ``offline`` and no log line.

A signal handler must not take locks (``Event.set``, ``Thread.start``): the main thread it
interrupted may hold them. So the handler only records the reason and a deadline; a thread
started with the run exits the process once that deadline has passed, whatever hangs.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)

TICK_S = 0.25  # how often the deadline thread looks at the clock (s)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
SAME_SIGNAL_S = 1.0  # a second signal this soon after the first is the same request (s)


class StopControl:
    """The stop reason of one run, and its signal handling. ``grace_s``: seconds after a stop
    signal before the process exits regardless; ``wake``: set by :meth:`request`."""

    def __init__(self, grace_s: float, wake: threading.Event) -> None:
        self.reason: str | None = None
        self._grace_s = grace_s
        self._wake = wake
        self._deadline_at: float | None = None  # monotonic time, set by a stop signal
        self.signalled = False
        self._signalled_at = 0.0
        #: events that an exit now would lose (count); read without locks, from a signal handler
        self.undelivered: Callable[[], int] = lambda: 0

    def request(self, reason: str) -> None:
        """Ask the worker to stop after the current block (the first reason is kept)."""
        if self.reason is None:
            self.reason = reason
        self._wake.set()

    def install(self) -> None:
        """Handle SIGTERM, SIGINT and SIGHUP (from the main thread only) and keep the deadline."""
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                if signum == signal.SIGHUP and signal.getsignal(signum) is signal.SIG_IGN:
                    continue  # started under nohup: a hang-up is not meant for us
                signal.signal(signum, self._on_signal)
        threading.Thread(target=self._keep_deadline, name="stop-deadline", daemon=True).start()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        now = time.monotonic()
        if self.signalled:
            if now - self._signalled_at < SAME_SIGNAL_S:
                return  # one kill, delivered twice (timeout(1) also signals the process group)
            log.warning("second %s: exiting now%s", name, self._abandoned())
            os._exit(1)
        # no locks here: the worker notices the reason within one tick
        self._signalled_at = now
        self._deadline_at = now + self._grace_s
        self.signalled = True
        if self.reason is None:
            self.reason = name
        log.info("%s received: finishing the current window and stopping%s", name,
                 " (SIGHUP stops edge-ser: restart it to read a changed config)"
                 if signum == signal.SIGHUP else "")

    def _abandoned(self) -> str:
        try:
            left = self.undelivered()
        except Exception:  # noqa: BLE001 - never let the count stop the exit
            return ""
        return f"; {left} buffered events abandoned, not delivered" if left else ""

    def _keep_deadline(self) -> None:
        while True:
            time.sleep(TICK_S)
            at = self._deadline_at
            if at is not None and time.monotonic() >= at:
                log.error("shutdown is taking too long: exiting now%s", self._abandoned())
                os._exit(1)
