"""Stdout sink, outbox, credentials, device ids and the sink factory (no broker needed)."""

from __future__ import annotations

import io
import json
import re
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_ser.config import MqttConfig, TlsConfig, parse_config
from edge_ser.errors import ConfigError, PublishError
from edge_ser.publish import StdoutSink, make_sink, resolve_device_id, state_from_event, to_json
from edge_ser.publish.credentials import read_password
from edge_ser.publish.mqtt import MqttSink
from edge_ser.publish.outbox import Outbox

EVENT = {
    "emotion": "happiness", "confidence": np.float32(0.5),
    "scores": {"anger": 0.1, "happiness": 0.5, "neutral": 0.3, "sadness": 0.1},
    "arousal": np.float64(0.25), "valence": 0.4, "start_s": 2.0, "end_s": 5.5, "speech_s": 3.1,
    "windows": [{"start_s": 2.0, "end_s": 5.5, "scores": np.array([0.1, 0.5, 0.3, 0.1])}],
}

def _mq(**values: Any) -> MqttConfig:
    return MqttConfig.model_validate(values)


def _tls(**values: Any) -> TlsConfig:
    return TlsConfig.model_validate(values)



def test_stdout_sink_writes_one_json_object_per_line() -> None:
    out = io.StringIO()
    sink = make_sink(_mq(), "dev", "edge-ser-compact-int8", stream=out)
    assert isinstance(sink, StdoutSink) and sink.connected and sink.dropped == 0
    sink.start()
    sink.publish_event(EVENT)
    sink.publish_state(state_from_event(EVENT))
    sink.publish_stats({"windows_run": 4, "type": "ignored"})
    sink.stop()
    sink.stop()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    objs = [json.loads(line) for line in lines]
    assert [o["type"] for o in objs] == ["emotion", "state", "stats"]
    assert list(objs[0])[0] == "type"
    assert objs[0]["emotion"] == "happiness" and objs[0]["confidence"] == 0.5
    assert objs[0]["model"] == "edge-ser-compact-int8"
    assert objs[0]["windows"][0]["scores"] == [0.1, 0.5, 0.3, 0.1]
    assert "windows" not in objs[1] and objs[1]["arousal"] == 0.25
    assert objs[2] == {"type": "stats", "windows_run": 4}


def test_stdout_sink_closed_stream_is_a_publish_error() -> None:
    out = io.StringIO()
    sink = StdoutSink(out)
    out.close()
    with pytest.raises(PublishError, match="cannot write events to stdout"):
        sink.publish_event({"emotion": "anger"})


def test_to_json_refuses_unknown_objects_in_one_line() -> None:
    with pytest.raises(PublishError, match="cannot encode payload as JSON: object is not"):
        to_json({"x": object()})


def test_factory_picks_mqtt_when_a_host_is_set() -> None:
    sink = make_sink(_mq(host="127.0.0.1", port=1), "dev", "m")
    assert isinstance(sink, MqttSink) and not sink.connected
    assert sink.topics.emotion == "edge-ser/dev/emotion"
    sink.stop()  # never started: nothing to do


def test_the_default_device_id_is_unique_per_board_and_stable(tmp_path: Path) -> None:
    """Every fresh Raspberry Pi OS board is called 'raspberrypi': with the host name alone as the
    id, two of them shared topics and fought over one MQTT session."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname().split(".")[0])
    board_a, board_b = tmp_path / "a", tmp_path / "b"
    board_a.write_text("3d1219c7c4c5404aaa1f6d2a48adfda4\n")
    board_b.write_text("5c0e79d3b1a24f6e9d0c4a1b2e3f4a5b\n")
    id_a = resolve_device_id(_mq(), machine_id_files=[board_a])
    assert re.fullmatch(rf"{re.escape(host)}-[0-9a-f]{{6}}", id_a), id_a
    assert resolve_device_id(_mq(), machine_id_files=[board_a]) == id_a  # the same every start
    assert resolve_device_id(_mq(), machine_id_files=[board_b]) != id_a  # another board
    assert "3d1219" not in id_a  # a keyed hash: the machine id itself is not published
    (tmp_path / "uninit").write_text("uninitialized\n")  # first boot, not yet written
    assert resolve_device_id(_mq(), machine_id_files=[tmp_path / "uninit", board_b]) == \
        resolve_device_id(_mq(), machine_id_files=[board_b])
    assert resolve_device_id(_mq(device_id="hall"), machine_id_files=[board_a]) == "hall"
    if Path("/etc/machine-id").is_file():
        assert resolve_device_id(_mq()) == resolve_device_id(_mq())


def test_device_ids() -> None:
    assert resolve_device_id(_mq(device_id="pi-4_b")) == "pi-4_b"
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname().split(".")[0])
    assert resolve_device_id(_mq(), machine_id_files=()) == host  # no machine id: the host name
    with pytest.raises(PublishError, match="mqtt.device_id: 'a/b'"):
        make_sink(_mq(), "a/b", "m")
    with pytest.raises(ConfigError, match=r"x\.yaml:2: mqtt\.device_id: String should match"):
        parse_config("mqtt:\n  device_id: 'bad#id'\n", "x.yaml")
    with pytest.raises(ConfigError, match=r"x\.yaml:2: mqtt\.prefix"):
        parse_config("mqtt:\n  prefix: 'home/+'\n", "x.yaml")


# --- outbox ----------------------------------------------------------------------------------

def test_outbox_keeps_order_and_drops_oldest_pending() -> None:
    box = Outbox(3)
    for i in range(5):
        box.put("t", str(i).encode(), 1)
    assert (box.dropped, len(box), box.pending) == (2, 3, 3)
    taken = [box.take() for _ in range(3)]
    assert [m.payload for m in taken if m] == [b"2", b"3", b"4"]
    assert box.take() is None


def test_outbox_never_drops_what_is_in_flight() -> None:
    box = Outbox(2)
    assert box.put("t", b"a", 1) is None
    a = box.take()
    assert a is not None and a.payload == b"a"
    box.sent(10, a)
    box.put("t", b"b", 1)
    assert box.put("t", b"c", 1) is not None  # full: the oldest *pending* (b) goes
    assert (box.inflight, box.pending, box.dropped) == (1, 1, 1)
    c = box.take()
    assert c is not None and c.payload == b"c"
    box.sent(11, c)
    dropped = box.put("t", b"d", 1)  # nothing pending: the new one is dropped
    assert dropped is not None and dropped.payload == b"d" and box.dropped == 2
    assert box.acked(10) is a and box.acked(10) is None and box.acked(11) is c
    assert len(box) == 0


def test_outbox_ack_before_hand_over_completes_and_give_back() -> None:
    box = Outbox(5)
    box.put("t", b"a", 1)
    box.put("t", b"b", 1)
    a = box.take()
    assert a is not None
    assert box.acked(7) is None  # the broker was faster than the hand-over
    box.sent(7, a)
    assert box.inflight == 0 and box.pending == 1
    b = box.take()
    assert b is not None
    box.give_back(b)
    assert box.take() is b
    box.sent(8, b)
    assert box.acked(7) is None and box.inflight == 1
    box.put("t", b"c", 1)
    c = box.take()
    assert c is not None
    box.discard(c)
    assert (len(box), box.dropped) == (1, 1)


def test_outbox_forgets_qos0_in_flight() -> None:
    box = Outbox(5)
    box.put("t", b"a", 0)
    m = box.take()
    assert m is not None
    box.sent(1, m)
    assert box.forget_qos0() == 1 and len(box) == 0
    with pytest.raises(ValueError):
        Outbox(0)


# --- credentials -----------------------------------------------------------------------------

def test_password_file_and_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pw").write_text("hunter2\nignored\n")
    assert read_password(tmp_path / "pw") == "hunter2"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.chdir(tmp_path)
    assert read_password(Path("mqtt")) == "from-systemd"
    assert read_password(Path("pw")) == "hunter2"  # not a credential: the working directory
    with pytest.raises(PublishError, match=r"^mqtt\.password_file: nope: no such file \(nor in"):
        read_password(Path("nope"))
    (tmp_path / "empty").write_text("")
    with pytest.raises(PublishError, match="the file is empty"):
        read_password(tmp_path / "empty")


def test_sink_config_errors_are_one_line(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("x")
    with pytest.raises(ValueError, match="password_file is set but mqtt.username is not"):
        _mq(host="h", password_file=pw)  # the config refuses it (check-config too)
    with pytest.raises(PublishError, match=r"^mqtt\.tls\.certfile: .*: no such file$"):
        MqttSink(_mq(host="h", tls=_tls(certfile=tmp_path / "c.pem")), "d")
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(PublishError, match="^mqtt.tls: cannot load the certificates"):
        MqttSink(_mq(host="h", tls=_tls(ca=bad)), device_id="d")


def test_non_finite_numbers_are_null_so_the_json_stays_valid() -> None:
    text = to_json({"temperature_c": float("nan"), "x": [float("inf"), 1.5], "n": np.float32(2),
                    "m": np.float32("nan"), "a": np.array([1.0, np.inf])})
    assert json.loads(text) == {"temperature_c": None, "x": [None, 1.5], "n": 2.0, "m": None,
                                "a": [1.0, None]}
    assert "NaN" not in text and "Infinity" not in text


class _NoAckClient:
    """paho-shaped: takes every publish, never acknowledges (a slow or stuck broker)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self._mid = 0

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> Any:
        from paho.mqtt.enums import MQTTErrorCode

        self._mid += 1
        self.sent.append(payload.decode())
        return type("Info", (), {"rc": MQTTErrorCode.MQTT_ERR_SUCCESS, "mid": self._mid})()


def test_pump_keeps_the_in_flight_cap_and_sends_states_after_their_events() -> None:
    import threading
    import time

    from edge_ser.publish.pump import Pump

    box, client, cond = Outbox(200), _NoAckClient(), threading.Condition()
    pump = Pump(client, box, "s", 20, cond)  # type: ignore[arg-type]
    pump.start()
    try:
        for i in range(50):  # a backlog built while the connection was not ready
            box.put("e", f"e{i}".encode(), 1)
            pump.put_state(f"s{i}".encode())
        with cond:
            pump.set_ready(True)
        deadline = time.monotonic() + 5
        while len(client.sent) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # room for a wrong extra publish
        assert client.sent == [f"e{i}" for i in range(20)]  # capped, and no state yet
        for mid in range(1, 21):  # the broker acknowledges: the rest follows, then the state
            box.acked(mid)
        with cond:
            cond.notify_all()
        deadline = time.monotonic() + 5
        while len(client.sent) < 41 and time.monotonic() < deadline:
            with cond:
                cond.notify_all()
            time.sleep(0.01)
            for mid in range(21, client._mid + 1):
                box.acked(mid)
        assert client.sent == [f"e{i}" for i in range(50)] + ["s49"], client.sent[-5:]
    finally:
        pump.close()


def test_stop_keeps_its_deadline_while_paho_hangs_in_a_connect() -> None:
    """A broker that drops packets holds paho's thread in a TCP connect for its 5-s timeout;
    stop() must still end near mqtt.stop_flush_s, inside the SIGTERM deadline (flush + 5 s)."""
    import time

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fill = []  # fill the accept queue: further connects hang instead of being refused
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fill.append(c)
    time.sleep(0.3)
    try:
        cfg = MqttConfig(host="127.0.0.1", port=port, stop_flush_s=1, discovery=False)
        sink = MqttSink(cfg, device_id="dev")
        sink.start(wait_s=0)
        time.sleep(0.5)  # paho is now inside its connect
        sink.publish_event({"emotion": "anger", "confidence": 0.5})
        t0 = time.monotonic()
        sink.stop()
        took = time.monotonic() - t0
        assert sink.undelivered == 1
        assert took < 1 + 2.0, took  # flush + the 1-s wait for paho's thread (was ~4.5 s)
    finally:
        for c in fill:
            c.close()
        srv.close()


def test_run_warns_about_a_password_file_its_group_may_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    pw.chmod(0o640)
    with caplog.at_level("WARNING", logger="edge_ser"):
        MqttSink(_mq(host="h", username="u", password_file=pw), device_id="d").stop()
    (line,) = [r.getMessage() for r in caplog.records if "readable" in r.getMessage()]
    assert line.startswith(f"mqtt.password_file: {pw} is readable by its group (mode 0640)")
