"""The daemon (a subprocess) against a real mosquitto on 127.0.0.1 and a real subscriber:
events from real speech, discovery, availability and last will (kill -9), the broker stopped
and restarted mid-stream with no event lost, a wrong password refused, TLS, and a fake thermal
zone driving throttle and pause in ``stats``."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures_broker import Broker, Subscriber

REPO = Path(__file__).resolve().parent.parent
VOICE_NOTE = REPO / "examples" / "voice-note.wav"
DEV = "testdev"
TOPIC = f"edge-ser/{DEV}"

pytestmark = pytest.mark.broker


def _write_config(tmp_path: Path, broker: Broker, model: Path, source: dict[str, Any],
                  mqtt: dict[str, Any] | None = None, **sections: Any) -> Path:
    mq = broker.mqtt_config(**{"device_id": DEV, "stats_interval_s": 0.5, **(mqtt or {})})
    cfg = {"source": source, "model": {"path": str(model)},
           "mqtt": mq.model_dump(mode="json", exclude_none=True), **sections}
    path = tmp_path / "edge-ser.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _start(cfg: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "edge_ser", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"daemon still running after {timeout} s: {err[-3000:]}") from None


def _starts(sub: Subscriber) -> list[float]:
    return [round(e["start_s"]) for e in sub.jsons(f"{TOPIC}/emotion")]


def test_events_state_stats_discovery_and_clean_offline(
    tmp_path: Path, broker: Broker, subscriber: Subscriber, tiny_model: Path,
    make_subscriber: Callable[..., Subscriber],
) -> None:
    cfg = _write_config(tmp_path, broker, tiny_model,
                        {"type": "file", "path": str(VOICE_NOTE), "realtime": False})
    proc = _start(cfg)
    out, err = _finish(proc)
    assert proc.returncode == 0, err
    assert out == ""  # with a broker nothing goes to stdout
    events = subscriber.wait_for(f"{TOPIC}/emotion", count=3)
    assert [m.qos for m in events] == [1, 1, 1] and not any(m.retain for m in events)
    assert _starts(subscriber) == [2, 7, 12]
    ev = events[0].json()
    for key in ("emotion", "confidence", "scores", "arousal", "valence", "start_s", "end_s",
                "speech_s", "model", "time"):
        assert key in ev
    state = subscriber.wait_for(f"{TOPIC}/state")[-1]
    assert state.json()["start_s"] == events[-1].json()["start_s"]
    late = make_subscriber(broker)  # joins after the run: sees only what is retained
    (kept,) = late.wait_for(f"{TOPIC}/state")
    assert kept.retain and kept.json() == state.json()
    assert [(m.text, m.retain) for m in late.wait_for(f"{TOPIC}/availability")] == [
        ("offline", True)]
    assert late.messages(f"{TOPIC}/emotion") == []  # events are not retained
    stats = subscriber.wait_for(f"{TOPIC}/stats")[-1].json()
    assert stats["windows_run"] == 3 and stats["events"] == 3 and stats["events_dropped"] == 0
    assert subscriber.texts(f"{TOPIC}/availability")[-1] == "offline"
    configs = [t for t in subscriber.all_topics() if t.startswith(f"homeassistant/sensor/{DEV}/")]
    assert {t.split("/")[3] for t in configs} >= {"emotion", "arousal", "valence", "throttle"}


def test_thermal_zone_in_stats_then_kill_9_gives_last_will(
    tmp_path: Path, broker: Broker, subscriber: Subscriber, tiny_model: Path
) -> None:
    zone = tmp_path / "temp"
    zone.write_text("45000\n")
    cfg = _write_config(
        tmp_path, broker, tiny_model,
        {"type": "file", "path": str(VOICE_NOTE), "realtime": True, "loop": True},
        budgets={"thermal": {"zone": str(zone), "soft_c": 70, "hard_c": 80,
                             "hysteresis_c": 5, "poll_s": 0.1}},
    )
    proc = _start(cfg)
    try:
        subscriber.wait_for(f"{TOPIC}/availability", predicate=lambda m: m.text == "online")
        stats_topic = f"{TOPIC}/stats"

        def wait_throttle(state: str, temp: float) -> None:
            subscriber.wait_for(stats_topic, timeout=15, predicate=lambda m: (
                m.json()["throttle"] == state and m.json()["temperature_c"] == temp))

        wait_throttle("normal", 45.0)
        zone.write_text("72500\n")
        wait_throttle("throttled", 72.5)
        zone.write_text("86000\n")
        wait_throttle("paused", 86.0)
        zone.write_text("77000\n")  # under hard_c but within the hysteresis: still paused
        wait_throttle("paused", 77.0)
        zone.write_text("74000\n")  # below hard_c - hysteresis_c: throttled, not yet normal
        wait_throttle("throttled", 74.0)
        zone.write_text("50000\n")
        wait_throttle("normal", 50.0)
        assert subscriber.wait_for(f"{TOPIC}/emotion", timeout=20)  # still classifying
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        subscriber.wait_for(f"{TOPIC}/availability", timeout=10,
                            predicate=lambda m: m.text == "offline")
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    assert "thermal: 72.5 C, normal -> throttled" in err
    assert "throttled -> paused" in err and "paused -> throttled" in err


def test_broker_restart_mid_stream_loses_no_event(
    tmp_path: Path, broker: Broker, subscriber: Subscriber, tiny_model: Path
) -> None:
    cfg = _write_config(tmp_path, broker, tiny_model,
                        {"type": "file", "path": str(VOICE_NOTE), "realtime": True})
    proc = _start(cfg)
    try:
        subscriber.wait_for(f"{TOPIC}/emotion", timeout=30)  # the first utterance, ~5 s in
        broker.stop()  # the second utterance (~10 s) is found while the broker is away
        time.sleep(6.0)
        broker.start()
        out, err = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    subscriber.wait_for(f"{TOPIC}/emotion", count=3, timeout=20)
    assert sorted(set(_starts(subscriber))) == [2, 7, 12]
    assert _starts(subscriber) == sorted(_starts(subscriber))  # in order
    assert "lost the connection" in err
    # the second utterance was found while the broker was away and delivered on reconnect
    assert re.search(r"connected to \S+ \([1-9]\d* events buffered\)", err), err[-2000:]


def test_wrong_password_is_refused_with_one_clear_line(
    tmp_path: Path, password_broker: Broker, tiny_model: Path
) -> None:
    cfg = _write_config(tmp_path, password_broker, tiny_model,
                        {"type": "file", "path": str(VOICE_NOTE), "realtime": False},
                        mqtt={"password": "not-the-password"})
    t0 = time.monotonic()
    proc = _start(cfg)
    out, err = _finish(proc)
    assert proc.returncode == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("edge-ser run: error: mqtt broker 127.0.0.1:")
    assert "refused" in last and ("password" in last.lower() or "authori" in last.lower())
    assert time.monotonic() - t0 < 30


def test_right_password_and_tls(
    tmp_path: Path, make_broker: Callable[..., Broker],
    make_subscriber: Callable[..., Subscriber], tiny_model: Path,
) -> None:
    for mode in ("password", "tls"):
        b = make_broker(mode)
        sub = make_subscriber(b)
        work = tmp_path / mode
        work.mkdir()
        cfg = _write_config(work, b, tiny_model,
                            {"type": "file", "path": str(VOICE_NOTE), "realtime": False})
        proc = _start(cfg)
        _, err = _finish(proc)
        assert proc.returncode == 0, err
        assert len(sub.wait_for(f"{TOPIC}/emotion", count=3)) == 3, mode
        assert json.loads(sub.texts(f"{TOPIC}/state")[-1])["model"] == "edge-ser-test-tiny"


def test_a_dead_mqtt_thread_stops_the_daemon_with_an_error(
    broker: Broker, tiny_model: Path
) -> None:
    """A dead paho thread must not pass for a broker that is away: before, the daemon went on
    classifying (forever, with a mic) and buffered events that nothing would ever send."""
    import threading

    from edge_ser.config import Config
    from edge_ser.daemon import Daemon
    from edge_ser.errors import PublishError
    from edge_ser.model import OnnxModel
    from edge_ser.publish.mqtt import MqttSink
    from tests.conftest import roomy

    cfg = roomy(Config.model_validate({
        "source": {"type": "file", "path": str(VOICE_NOTE), "realtime": True, "loop": True},
        "mqtt": broker.mqtt_config(device_id=DEV).model_dump(mode="json", exclude_none=True),
    }))
    sink = MqttSink(cfg.mqtt, device_id=DEV, model_name="tiny")
    daemon = Daemon(cfg, model=OnnxModel(tiny_model), sink=sink)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["rc"] = daemon.run(install_signals=False)
        except PublishError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while not sink.connected:
            assert time.monotonic() < deadline and worker.is_alive(), outcome
            time.sleep(0.05)
        sink._client._host = "broker..lan"  # what the reconnect after the restart resolves
        broker.restart()
        worker.join(30)
        assert not worker.is_alive(), "the daemon kept running with a dead MQTT client"
    finally:
        daemon.request_stop("test over")
        worker.join(15)
    assert "network thread stopped (UnicodeError" in str(outcome.get("error")), outcome
    assert daemon.stop_reason == "mqtt client failed"
