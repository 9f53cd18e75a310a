"""Minimal ``sd_notify`` (no dependency): READY=1, WATCHDOG=1, STATUS=..., STOPPING=1.

Messages go as datagrams to ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract
namespace). Outside systemd every call is a no-op. The watchdog interval comes from
``$WATCHDOG_USEC``; :meth:`Notifier.watchdog` pings at most every half interval, and the daemon
calls it from its worker loop, so a stalled worker stops the pings and systemd restarts it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address or None
        self.watchdog_s = watchdog_usec / 1e6 if watchdog_usec else None
        self._last_ping = -float("inf")
        self._sock: socket.socket | None = None
        self.sent = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        usec: int | None = None
        pid = env.get("WATCHDOG_PID")
        if env.get("WATCHDOG_USEC", "").isdigit() and (not pid or pid == str(os.getpid())):
            usec = int(env["WATCHDOG_USEC"])
        return cls(env.get("NOTIFY_SOCKET"), usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (``KEY=value``) as one message; False when not under systemd."""
        if self.address is None:
            return False
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.sendto("\n".join(fields).encode(), addr)
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self.address, exc)
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog(self, force: bool = False) -> bool:
        """Ping the watchdog if half its interval has passed (or ``force``)."""
        if self.watchdog_s is None or self.address is None:
            return False
        now = time.monotonic()
        if not force and now - self._last_ping < self.watchdog_s / 2:
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
