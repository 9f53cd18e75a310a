"""The systemd unit (verified by systemd-analyze) and sd_notify: READY, watchdog from the
worker loop (a stalled worker stops pinging), STOPPING."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_ser.audio import read_wav, write_wav
from edge_ser.config import Config, SourceConfig
from edge_ser.daemon import Daemon
from edge_ser.model import OnnxModel
from edge_ser.publish.stdout import StdoutSink
from edge_ser.sdnotify import Notifier
from tests.conftest import roomy

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "edge-ser.service"
VOICE_NOTE = REPO / "examples" / "voice-note.wav"


def _directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_has_the_hardening_and_service_settings() -> None:
    d = _directives(UNIT.read_text())
    expect = {
        "Type": "notify", "Restart": "on-failure", "User": "edge-ser",
        "SupplementaryGroups": "audio", "ProtectSystem": "strict", "NoNewPrivileges": "yes",
        "PrivateTmp": "yes", "StandardOutput": "journal", "StandardError": "journal",
    }
    for key, value in expect.items():
        assert d.get(key) == [value], key
    assert int(d["WatchdogSec"][0]) >= 10
    assert d["MemoryMax"][0].endswith(("M", "G"))
    assert d["LoadCredential"][0].startswith("mqtt-password:")
    assert " run --config " in d["ExecStart"][0]


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed")
    edge_ser = Path(sys.executable).with_name("edge-ser")
    if not edge_ser.exists():
        edge_ser = Path(sys.executable)
    # the real unit points at /opt/edge-ser; verify checks that ExecStart exists, so point a
    # copy at this checkout's interpreter
    text = UNIT.read_text().replace("/opt/edge-ser/venv/bin/edge-ser", str(edge_ser))
    unit = tmp_path / "edge-ser.service"
    unit.write_text(text)
    proc = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    own = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "edge-ser.service" in ln]
    assert proc.returncode == 0 and not own, proc.stdout + proc.stderr


# --- sd_notify -----------------------------------------------------------------------------

class NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._recv, daemon=True)
        self._thread.start()

    def _recv(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def times(self, field: str) -> list[float]:
        return [t for t, m in self.messages if field in m.split("\n")]


def test_notifier_protocol(tmp_path: Path) -> None:
    ns = NotifySocket(tmp_path / "notify")
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": str(ns.path), "WATCHDOG_USEC": "2000000"})
        assert n.enabled and n.watchdog_s == 2.0
        assert n.ready("listening")
        assert n.watchdog() and not n.watchdog()  # rate-limited to half the interval
        assert n.status("thermal throttled") and n.stopping()
        time.sleep(0.3)
        msgs = [m for _, m in ns.messages]
        assert msgs == ["READY=1\nSTATUS=listening", "WATCHDOG=1", "STATUS=thermal throttled",
                        "STOPPING=1"]
    finally:
        ns.close()
    off = Notifier.from_env({})
    assert not off.enabled and not off.ready() and not off.watchdog(force=True)
    other = Notifier.from_env({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "1"})
    assert other.watchdog_s is None  # the watchdog is meant for another process


class StallingModel:
    """The real tiny model, with one inference that hangs for ``stall_s`` (a stuck worker)."""

    def __init__(self, path: Path, stall_s: float) -> None:
        self.inner = OnnxModel(path)
        self.stall_s = stall_s
        self.calls = 0

    @property
    def info(self):  # type: ignore[no-untyped-def]
        return self.inner.info

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls == 1:
            time.sleep(self.stall_s)
        return self.inner.probabilities(batch)


def test_watchdog_pings_come_from_the_worker_loop(tmp_path: Path, tiny_model: Path) -> None:
    ns = NotifySocket(tmp_path / "notify")
    clip = tmp_path / "first-utterance.wav"
    write_wav(clip, read_wav(VOICE_NOTE)[: 16000 * 6])  # one utterance, 1.7-4.7 s
    cfg = roomy(Config(source=SourceConfig(type="file", path=clip, realtime=True)))
    out = tmp_path / "events.jsonl"
    try:
        with out.open("w") as stream:
            daemon = Daemon(
                cfg, model=StallingModel(tiny_model, stall_s=2.0),
                sink=StdoutSink(stream, model_name="tiny"),
                notifier=Notifier(str(ns.path), watchdog_usec=200_000),
            )
            rc = daemon.run(install_signals=False)
        time.sleep(0.3)
    finally:
        ns.close()
    assert rc == 0
    ready, pings, stopping = ns.times("READY=1"), ns.times("WATCHDOG=1"), ns.times("STOPPING=1")
    assert len(ready) == 1 and len(stopping) == 1 and len(pings) > 10
    gaps = np.diff(pings)
    assert gaps.max() >= 1.8  # no ping while the worker was stuck in inference...
    assert np.median(gaps) < 0.5  # ...but steady pings otherwise
    assert ready[0] < pings[0] and pings[-1] <= stopping[0]


def test_journald_log_lines_carry_priorities(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import logging

    from edge_ser.commands.run import configure_logging

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    old_level = root.level
    saved = [(h, h.formatter) for h in root.handlers]
    root.addHandler(handler)
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    try:
        configure_logging("INFO")
        logging.getLogger("edge_ser.test").warning("hot: %d C", 81)
        logging.getLogger("edge_ser.test").debug("not shown")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for h, fmt in saved:  # pytest's own handlers
            h.setFormatter(fmt)
    assert stream.getvalue() == "<4>edge_ser.test: hot: 81 C\n"
