"""A throw-away mosquitto on 127.0.0.1 and a subscriber that timestamps every message."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def mosquitto_missing() -> str | None:
    if not Path(MOSQUITTO).is_file():
        return "mosquitto is not installed (apt-get install mosquitto)"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """``with Broker() as b:`` an anonymous mosquitto listening on ``127.0.0.1:b.port``."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="edge-ser-bench-mqtt-"))
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Broker:
        conf = self._dir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} {self.host}\nallow_anonymous true\n"
                        "persistence false\n", encoding="utf-8")
        self._proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self._proc.returncode}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.host}:{self.port} within 10 s")

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)


@dataclass
class Received:
    t: float  # time.monotonic() at arrival
    topic: str
    payload: bytes
    retain: bool


@dataclass
class Recorder:
    """A paho 2.x client subscribed to ``topic`` that keeps every message with its arrival time
    (``keep=False``: only counts them and keeps the last one per topic, for long runs)."""

    host: str
    port: int
    topic: str = "#"
    keep: bool = True
    messages: list[Received] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    last: dict[str, Received] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2,
                                   client_id=f"bench-recorder-{os.getpid()}")
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe(self.topic, qos=1)
        self._ready.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        got = Received(time.monotonic(), msg.topic, bytes(msg.payload), bool(msg.retain))
        with self._lock:
            self.counts[got.topic] += 1
            self.last[got.topic] = got
            if self.keep:
                self.messages.append(got)

    def start(self, timeout: float = 10.0) -> None:
        self._client.connect(self.host, self.port, keepalive=30)
        self._client.loop_start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"could not subscribe on {self.host}:{self.port}")
        time.sleep(0.2)  # let the SUBACK land before anything is published

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def latest(self, topic: str) -> Received | None:
        with self._lock:
            return self.last.get(topic)

    def on(self, suffix: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]
