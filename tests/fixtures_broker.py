"""A real mosquitto broker for tests, and a real subscriber that records what it sees.

Fixtures (registered in ``tests/conftest.py``; every one skips with a reason when
``/usr/sbin/mosquitto`` or ``openssl`` is missing):

``broker``
    A started anonymous broker on ``127.0.0.1`` and a free port (a :class:`Broker`).
``password_broker``
    Anonymous access off; user :data:`USERNAME` with password :data:`PASSWORD`
    (made with ``mosquitto_passwd``).
``tls_broker``
    TLS only, server certificate signed by a CA made with ``openssl`` for this test session,
    client certificate required (:class:`Pki` in ``broker.pki``: ``ca``, ``client_cert``,
    ``client_key`` and ``wrong_ca``, an unrelated CA).
``make_broker(mode="plain"|"password"|"tls", require_certificate=True)``
    A factory for more brokers (each stopped at teardown).
``make_subscriber(broker, topics=("#",))``
    A connected paho client (persistent session, QoS 1) that collects messages per topic:
    ``sub.wait_for(topic, count=1, timeout=10, predicate=None)`` polls until ``count``
    matching messages arrived (AssertionError listing what did arrive otherwise),
    ``sub.texts(topic)``, ``sub.jsons(topic)``, ``sub.messages(topic)`` (each with
    ``.payload``, ``.retain``), ``sub.clear()``.
``subscriber``
    ``make_subscriber(broker)``: everything on the plain ``broker``.

A :class:`Broker` has ``host``, ``port``, ``stop()``, ``start()``, ``restart()`` (same port,
persistence on, so retained messages and the subscriber's session survive a restart),
``kill()`` (SIGKILL), ``pause()``/``resume()`` (SIGSTOP/SIGCONT: connections hang, nothing is
acknowledged), ``log_text()`` and ``mqtt_config(**overrides) -> MqttConfig`` (host, port,
credentials and TLS filled in for the sink under test, reconnects after 1-2 s,
``connect_wait_s`` 5, ``stop_flush_s`` 3; ``password="wrong"`` writes a different password
file).

Example::

    def test_online(broker, make_subscriber):
        sub = make_subscriber(broker)
        sink = MqttSink(broker.mqtt_config(), device_id="dev1", model_name="m")
        sink.start(wait_s=5)
        sub.wait_for("edge-ser/dev1/availability", predicate=lambda m: m.text == "online")
"""

from __future__ import annotations

import getpass
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_ser.config import MqttConfig, TlsConfig

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
USERNAME = "edge"
PASSWORD = "s3cret-pass"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Pki:
    """A CA, a server and a client certificate (EC P-256), and an unrelated CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    wrong_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path) -> Pki:
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "wrong-ca"):
        _openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2",
                 "-subj", f"/CN=edge-ser test {ca}", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, cn in (("server", "localhost"), ("client", "edge-ser-test-client")):
        _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={cn}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
                 "-extfile", f"{name}.ext", cwd=d)
    return Pki(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt",
               d / "client.key", d / "wrong-ca.crt")


class Broker:
    """One mosquitto process with its own config, persistence and log under ``workdir``."""

    host = "127.0.0.1"

    def __init__(self, workdir: Path, mode: str = "plain", pki: Pki | None = None,
                 require_certificate: bool = True) -> None:
        if mode not in ("plain", "password", "tls"):
            raise ValueError(f"unknown broker mode {mode!r}")
        if mode == "tls" and pki is None:
            raise ValueError("a tls broker needs a Pki")
        self.workdir = workdir
        self.mode = mode
        self.pki = pki
        self.port = free_port()
        self.username = USERNAME if mode == "password" else None
        self.password = PASSWORD if mode == "password" else None
        self._proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} {self.host}",
            f"user {getpass.getuser()}",
            "persistence true",
            f"persistence_location {workdir}/",
            "autosave_interval 1",
            f"log_dest file {workdir / 'mosquitto.log'}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
        ]
        if mode == "password":
            passwd = workdir / "passwd"
            subprocess.run([MOSQUITTO_PASSWD, "-b", "-c", str(passwd), USERNAME, PASSWORD],
                           check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if mode == "tls":
            assert pki is not None
            lines += [f"cafile {pki.ca}", f"certfile {pki.server_cert}",
                      f"keyfile {pki.server_key}",
                      f"require_certificate {'true' if require_certificate else 'false'}"]
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        self._proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"mosquitto exited ({self._proc.returncode}): {err} "
                                   f"{self.log_text()[-2000:]}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its persistence file) and wait."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)  # in case it was paused
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stderr:
            self._proc.stderr.close()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL: no goodbye, nothing saved since the last autosave (every second)."""
        if self._proc is not None:
            self._proc.kill()
        self.stop()

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing is read or acknowledged."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def mqtt_config(self, password: str | None = None, **overrides: Any) -> MqttConfig:
        """A config for the sink under test: this broker, fast reconnects, its credentials."""
        values: dict[str, Any] = {
            "host": self.host, "port": self.port, "reconnect_min_s": 1.0,
            "reconnect_max_s": 2.0, "connect_wait_s": 5.0, "stop_flush_s": 3.0,
        }
        if self.mode == "password":
            secret = password if password is not None else PASSWORD
            pw_file = self.workdir / f"client-password-{abs(hash(secret))}"
            pw_file.write_text(secret + "\n")
            pw_file.chmod(0o600)  # as docs/mqtt.md says: others may not read it (else a warning)
            values.update(username=USERNAME, password_file=pw_file)
        if self.mode == "tls":
            assert self.pki is not None
            values["tls"] = TlsConfig.model_validate({
                "ca": self.pki.ca, "certfile": self.pki.client_cert, "keyfile": self.pki.client_key,
            })
        values.update(overrides)
        return MqttConfig.model_validate(values)


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """A real paho client (persistent session) recording every message per topic."""

    def __init__(self, broker: Broker, topics: Sequence[str] = ("#",),
                 client_id: str | None = None) -> None:
        self.broker = broker
        self.topics = list(topics)
        self._lock = threading.Lock()
        self._by_topic: dict[str, list[Received]] = {}
        self._order: list[str] = []  # topics in arrival order
        self._subscribed = threading.Event()
        cid = client_id or f"test-sub-{uuid.uuid4().hex[:12]}"
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=cid,
                                  clean_session=False)
        if broker.username:
            self.client.username_pw_set(broker.username, broker.password)
        if broker.mode == "tls":
            assert broker.pki is not None
            self.client.tls_set(ca_certs=str(broker.pki.ca), certfile=str(broker.pki.client_cert),
                                keyfile=str(broker.pki.client_key))
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def connect(self, timeout: float = 10.0) -> Subscriber:
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            raise AssertionError(f"subscriber not subscribed within {timeout} s")
        return self

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def expect_resubscribe(self) -> None:
        """Forget the last SUBACK: :meth:`wait_subscribed` then waits for the next one."""
        self._subscribed.clear()

    def wait_subscribed(self, timeout: float = 10.0) -> None:
        if not self._subscribed.wait(timeout):
            raise AssertionError(f"subscriber not subscribed again within {timeout} s")

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if not reason.is_failure:
            client.subscribe([(t, 1) for t in self.topics])

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        rec = Received(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos)
        with self._lock:
            self._by_topic.setdefault(msg.topic, []).append(rec)
            self._order.append(msg.topic)

    def messages(self, topic: str) -> list[Received]:
        with self._lock:
            return list(self._by_topic.get(topic, []))

    def texts(self, topic: str) -> list[str]:
        return [m.text for m in self.messages(topic)]

    def jsons(self, topic: str) -> list[Any]:
        return [m.json() for m in self.messages(topic)]

    def arrival_order(self) -> list[str]:
        with self._lock:
            return list(self._order)

    def all_topics(self) -> list[str]:
        with self._lock:
            return sorted(self._by_topic)

    def clear(self) -> None:
        with self._lock:
            self._by_topic.clear()

    def wait_for(self, topic: str, count: int = 1, timeout: float = 10.0,
                 predicate: Callable[[Received], bool] | None = None) -> list[Received]:
        """Poll until ``count`` messages on ``topic`` match ``predicate``; return them."""
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.messages(topic) if predicate is None or predicate(m)]
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                seen = [m.text[:80] for m in self.messages(topic)]
                raise AssertionError(f"{topic}: {len(found)}/{count} matching messages after "
                                     f"{timeout} s; got {seen}; topics {self.all_topics()}")
            time.sleep(0.02)


@pytest.fixture(scope="session")
def mosquitto_bin() -> str:
    if not Path(MOSQUITTO).is_file():
        pytest.skip(f"needs mosquitto at {MOSQUITTO} (Debian package 'mosquitto')")
    return MOSQUITTO


@pytest.fixture(scope="session")
def broker_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make test certificates")
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def make_broker(mosquitto_bin: str, tmp_path: Path,
                request: pytest.FixtureRequest) -> Iterator[Callable[..., Broker]]:
    brokers: list[Broker] = []

    def factory(mode: str = "plain", require_certificate: bool = True) -> Broker:
        if mode == "password" and not Path(MOSQUITTO_PASSWD).is_file():
            pytest.skip(f"needs {MOSQUITTO_PASSWD} (Debian package 'mosquitto')")
        pki = request.getfixturevalue("broker_pki") if mode == "tls" else None
        b = Broker(tmp_path / f"broker-{len(brokers)}", mode, pki, require_certificate)
        brokers.append(b)
        b.start()
        return b

    yield factory
    for b in brokers:
        b.stop()


@pytest.fixture
def broker(make_broker: Callable[..., Broker]) -> Broker:
    return make_broker("plain")


@pytest.fixture
def password_broker(make_broker: Callable[..., Broker]) -> Broker:
    return make_broker("password")


@pytest.fixture
def tls_broker(make_broker: Callable[..., Broker]) -> Broker:
    return make_broker("tls")


@pytest.fixture
def make_subscriber() -> Iterator[Callable[..., Subscriber]]:
    subs: list[Subscriber] = []

    def factory(broker: Broker, topics: Sequence[str] = ("#",)) -> Subscriber:
        sub = Subscriber(broker, topics)
        subs.append(sub)
        return sub.connect()

    yield factory
    for s in subs:
        s.close()


@pytest.fixture
def subscriber(broker: Broker, make_subscriber: Callable[..., Subscriber]) -> Subscriber:
    return make_subscriber(broker)
