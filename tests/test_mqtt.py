"""MqttSink against a real mosquitto: availability, last will, credentials, TLS, reconnects."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_ser.config import TlsConfig
from edge_ser.errors import PublishError
from edge_ser.publish.mqtt import MqttSink
from tests.fixtures_broker import Broker, Subscriber

pytestmark = pytest.mark.broker

DEV = "kitchen-1"
AVAIL = f"edge-ser/{DEV}/availability"
EMOTION = f"edge-ser/{DEV}/emotion"
STATE = f"edge-ser/{DEV}/state"
STATS = f"edge-ser/{DEV}/stats"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def sinks() -> Iterator[list[MqttSink]]:
    made: list[MqttSink] = []
    yield made
    for s in made:
        s.stop()


def _sink(sinks: list[MqttSink], broker: Broker, **overrides: Any) -> MqttSink:
    sink = MqttSink(broker.mqtt_config(**overrides), device_id=DEV, model_name="test-model")
    sinks.append(sink)
    return sink


def _is(text: str) -> Callable[..., bool]:
    return lambda m: m.text == text


def _event(seq: int) -> dict[str, object]:
    return {"emotion": "anger", "confidence": 0.7, "seq": seq}


def _wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_online_retained_then_offline_on_clean_stop(
    broker: Broker, make_subscriber: Callable[..., Subscriber], sinks: list[MqttSink]
) -> None:
    early = make_subscriber(broker, [AVAIL])
    sink = _sink(sinks, broker)
    assert not sink.connected
    sink.start(wait_s=5)
    assert sink.connected
    early.wait_for(AVAIL, predicate=_is("online"))
    late = make_subscriber(broker, [AVAIL])  # joins after: sees the retained "online"
    (msg,) = late.wait_for(AVAIL, predicate=_is("online"))
    assert msg.retain
    sink.stop()
    assert not sink.connected
    late.wait_for(AVAIL, predicate=_is("offline"))
    after = make_subscriber(broker, [AVAIL])
    (msg,) = after.wait_for(AVAIL)
    assert (msg.text, msg.retain) == ("offline", True)


def test_event_state_and_stats_payloads(
    broker: Broker, subscriber: Subscriber, make_subscriber: Callable[..., Subscriber],
    sinks: list[MqttSink],
) -> None:
    sink = _sink(sinks, broker)
    sink.start(wait_s=5)
    event = {"emotion": "sadness", "confidence": np.float32(0.625),
             "scores": {"anger": 0.1, "happiness": 0.1, "neutral": 0.175, "sadness": 0.625},
             "arousal": -0.4, "valence": -0.5, "start_s": 1.0, "end_s": 3.5, "speech_s": 2.5}
    sink.publish_event(event)
    sink.publish_state({k: v for k, v in event.items() if k != "speech_s"})
    (ev,) = subscriber.wait_for(EMOTION)
    body = ev.json()
    assert body["emotion"] == "sadness" and body["confidence"] == 0.625
    assert body["model"] == "test-model" and not ev.retain and ev.qos == 1
    subscriber.wait_for(STATE)
    order = [t for t in subscriber.arrival_order() if t in (EMOTION, STATE)]
    assert order == [EMOTION, STATE]  # the event, then the state it led to (docs/mqtt.md)
    _wait_until(lambda: sink.buffered == 0)  # the PUBACK may trail the subscriber's copy
    sink.publish_stats({"windows_run": 3, "windows_dropped": 0, "throttle": "normal"})
    (st,) = subscriber.wait_for(STATS)
    assert st.json() == {"windows_run": 3, "windows_dropped": 0, "throttle": "normal",
                         "events_dropped": 0, "events_buffered": 0}
    late = make_subscriber(broker, [STATE])
    (state,) = late.wait_for(STATE)
    assert state.retain and state.json()["emotion"] == "sadness"


_CHILD = """
import sys, time
from edge_ser.config import MqttConfig
from edge_ser.publish.mqtt import MqttSink
sink = MqttSink(MqttConfig.model_validate_json(sys.argv[1]), device_id=sys.argv[2])
sink.start(wait_s=10)
print("connected" if sink.connected else "not connected", flush=True)
time.sleep(120)
"""


def test_last_will_offline_when_killed(broker: Broker, subscriber: Subscriber) -> None:
    cfg = broker.mqtt_config(keepalive_s=60)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, cfg.model_dump_json(), DEV],
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "connected"
        subscriber.wait_for(AVAIL, predicate=_is("online"))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        subscriber.wait_for(AVAIL, predicate=_is("offline"), timeout=15)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()


def test_wrong_password_is_refused_with_one_clear_line(
    password_broker: Broker, sinks: list[MqttSink], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_ser")
    sink = _sink(sinks, password_broker, password="not-the-password")
    with pytest.raises(PublishError) as err:
        sink.start(wait_s=5)
    text = str(err.value)
    assert "\n" not in text and "refused" in text and str(password_broker.port) in text
    assert "authori" in text.lower() or "password" in text.lower()
    assert not sink.connected
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert refusals and refusals[0].levelno == logging.ERROR
    assert not any("connected to" in r.getMessage() for r in caplog.records)
    assert not any("before accepting" in r.getMessage() for r in caplog.records)


def test_plain_mqtt_to_a_tls_port_says_so(
    tls_broker: Broker, sinks: list[MqttSink], caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the only line was 'not reachable' (the reset was logged at DEBUG)."""
    caplog.set_level(logging.INFO, logger="edge_ser")
    sink = _sink(sinks, tls_broker, tls=None)
    sink.start(wait_s=2)  # not fatal: a broker restarting also closes connections early
    assert not sink.connected
    lines = [r for r in caplog.records if "closed the connection before accepting it" in
             r.getMessage()]
    assert lines and lines[0].levelno == logging.WARNING and "mqtt.tls" in lines[0].getMessage()


def test_tls_to_a_plain_port_says_so(
    broker: Broker, tls_broker: Broker, sinks: list[MqttSink], caplog: pytest.LogCaptureFixture
) -> None:
    """The reverse mistake: mqtt.tls set against a plain broker read 'unreachable: Connection
    reset by peer', with nothing about TLS."""
    caplog.set_level(logging.INFO, logger="edge_ser")
    tls = TlsConfig.model_validate({"ca": tls_broker.pki.ca})
    sink = _sink(sinks, broker, tls=tls)
    sink.start(wait_s=2)  # retried: a broker restarting also resets connections
    assert not sink.connected
    lines = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert lines and "mqtt.tls is set, does that port speak TLS" in lines[0], lines


def test_right_password_connects(
    password_broker: Broker, make_subscriber: Callable[..., Subscriber], sinks: list[MqttSink]
) -> None:
    sub = make_subscriber(password_broker, [EMOTION])
    sink = _sink(sinks, password_broker)
    sink.start(wait_s=5)
    assert sink.connected
    sink.publish_event(_event(1))
    assert sub.wait_for(EMOTION)[0].json()["seq"] == 1


def test_password_from_credentials_directory(
    password_broker: Broker, sinks: list[MqttSink], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_text("s3cret-pass\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.chdir(tmp_path)
    sink = _sink(sinks, password_broker, password_file=Path("mqtt-password"))
    assert sink.wait_connected(0) is False
    sink.start(wait_s=5)
    assert sink.connected


def test_tls_with_generated_ca(
    tls_broker: Broker, make_subscriber: Callable[..., Subscriber], sinks: list[MqttSink]
) -> None:
    sub = make_subscriber(tls_broker, [EMOTION, AVAIL])
    sink = _sink(sinks, tls_broker)
    sink.start(wait_s=5)
    assert sink.connected
    sink.publish_event(_event(7))
    assert sub.wait_for(EMOTION)[0].json()["seq"] == 7
    sub.wait_for(AVAIL, predicate=_is("online"))


def test_tls_wrong_ca_fails_with_clear_error(tls_broker: Broker, sinks: list[MqttSink]) -> None:
    pki = tls_broker.pki
    assert pki is not None
    tls = TlsConfig.model_validate(
        {"ca": pki.wrong_ca, "certfile": pki.client_cert, "keyfile": pki.client_key}
    )
    sink = _sink(sinks, tls_broker, tls=tls)
    with pytest.raises(PublishError, match=r"TLS certificate check failed .*mqtt\.tls\.ca"):
        sink.start(wait_s=5)
    assert not sink.connected


def test_tls_without_the_required_client_cert_fails_with_clear_error(
    tls_broker: Broker, sinks: list[MqttSink]
) -> None:
    pki = tls_broker.pki
    assert pki is not None
    sink = _sink(sinks, tls_broker, tls=TlsConfig.model_validate({"ca": pki.ca}))
    with pytest.raises(PublishError, match=r"TLS session refused by the broker .*certificate"):
        sink.start(wait_s=5)
    assert not sink.connected


def test_tls_missing_ca_file_names_the_key(tls_broker: Broker, tmp_path: Path) -> None:
    cfg = tls_broker.mqtt_config(tls=TlsConfig.model_validate({"ca": tmp_path / "nope.crt"}))
    with pytest.raises(PublishError, match=r"^mqtt\.tls\.ca: .*nope\.crt: no such file$"):
        MqttSink(cfg, device_id=DEV)


def test_unreachable_broker_keeps_retrying(broker: Broker, sinks: list[MqttSink]) -> None:
    broker.stop()
    sink = _sink(sinks, broker)
    sink.start(wait_s=1.5)  # no error: the network may come back
    assert not sink.connected
    broker.start()
    assert sink.wait_connected(10)


def test_stop_waits_for_a_broker_that_comes_back(
    broker: Broker, make_subscriber: Callable[..., Subscriber], sinks: list[MqttSink]
) -> None:
    """stop() waits up to mqtt.stop_flush_s for buffered events, connected or not (before, a
    broker away at the stop meant the events were given up at once)."""
    import threading

    sub = make_subscriber(broker, [EMOTION])
    sink = _sink(sinks, broker, stop_flush_s=8, reconnect_min_s=1, reconnect_max_s=1)
    sink.start(wait_s=5)
    broker.stop()
    _wait_until(lambda: not sink.connected)
    for i in range(3):
        sink.publish_event(_event(i))
    threading.Timer(1.5, broker.start).start()
    sink.stop()
    assert sink.undelivered == 0
    assert [m.json()["seq"] for m in sub.wait_for(EMOTION, count=3, timeout=20)][:3] == [0, 1, 2]


def test_broker_restart_mid_stream_loses_nothing_and_keeps_order(
    broker: Broker, make_subscriber: Callable[..., Subscriber], sinks: list[MqttSink]
) -> None:
    sub = make_subscriber(broker, [EMOTION])  # persistent session: survives the restart
    sink = _sink(sinks, broker)
    sink.start(wait_s=5)
    for i in range(5):
        sink.publish_event(_event(i))
    sub.wait_for(EMOTION, count=5)
    _wait_until(lambda: sink.buffered == 0)  # all acknowledged
    broker.stop()
    _wait_until(lambda: not sink.connected)
    for i in range(5, 15):  # produced while the broker is away
        sink.publish_event(_event(i))
    assert sink.buffered == 10
    broker.start()
    # QoS 1 is "at least once": the broker may re-deliver to the subscriber's restored session,
    # so wait for every seq (not for 15 messages, which re-deliveries can make up early)
    _wait_until(lambda: {m.json()["seq"] for m in sub.messages(EMOTION)} >= set(range(15)),
                timeout=20)
    got = sub.messages(EMOTION)
    assert list(dict.fromkeys(m.json()["seq"] for m in got)) == list(range(15))
    _wait_until(lambda: sink.buffered == 0)
    sub.wait_for(EMOTION, predicate=lambda m: m.json()["seq"] == 14)
    # A burst cut off by a second restart: what was in flight is re-sent after the reconnect.
    for i in range(15, 45):
        sink.publish_event(_event(i))
    broker.restart()
    sub.wait_for(EMOTION, predicate=lambda m: m.json()["seq"] == 44, timeout=20)
    seqs = list(dict.fromkeys(m.json()["seq"] for m in sub.messages(EMOTION)))
    assert seqs == list(range(45))  # none lost, first deliveries in order
    _wait_until(lambda: sink.buffered == 0)
    assert sink.dropped == 0


def test_events_in_flight_when_the_broker_dies_are_sent_again(
    broker: Broker, make_subscriber: Callable[..., Subscriber], sinks: list[MqttSink]
) -> None:
    sub = make_subscriber(broker, [EMOTION])
    sink = _sink(sinks, broker)
    sink.start(wait_s=5)
    sink.publish_event(_event(0))
    sub.wait_for(EMOTION)
    # A graceful restart writes the subscriber's session to disk, so the kill below cannot lose
    # it (relying on the 1-s autosave alone was flaky on a loaded machine).
    sub.expect_resubscribe()
    broker.restart()
    sub.wait_subscribed()
    _wait_until(lambda: sink.connected)
    broker.pause()  # the sink's events reach the socket but are never acknowledged
    for i in range(1, 11):
        sink.publish_event(_event(i))
    time.sleep(0.5)
    assert sink.connected and sink.buffered == 10  # handed to paho, awaiting PUBACK
    broker.kill()  # the broker never read them
    _wait_until(lambda: not sink.connected)
    sink.publish_event(_event(11))
    broker.start()
    sub.wait_for(EMOTION, predicate=lambda m: m.json()["seq"] == 11, timeout=20)
    seqs = list(dict.fromkeys(m.json()["seq"] for m in sub.messages(EMOTION)))
    assert seqs == list(range(12))
    _wait_until(lambda: sink.buffered == 0)


def test_outbox_overflow_drops_oldest_and_counts(
    broker: Broker, make_subscriber: Callable[..., Subscriber], sinks: list[MqttSink]
) -> None:
    sub = make_subscriber(broker, [EMOTION, STATS])
    sink = _sink(sinks, broker, buffer_events=5)
    sink.start(wait_s=5)
    broker.stop()
    _wait_until(lambda: not sink.connected)
    for i in range(12):
        sink.publish_event(_event(i))
    assert (sink.dropped, sink.buffered) == (7, 5)
    sink.publish_state({"emotion": "neutral", "seq": 1})
    sink.publish_state({"emotion": "anger", "seq": 2})  # only the newest state is kept
    broker.start()
    got = sub.wait_for(EMOTION, count=5, timeout=20)
    assert [m.json()["seq"] for m in got] == [7, 8, 9, 10, 11]
    _wait_until(lambda: sink.buffered == 0)
    late = make_subscriber(broker, [STATE])
    (state,) = late.wait_for(STATE)
    assert state.retain and state.json()["seq"] == 2
    sink.publish_stats({"windows_run": 0})
    (st,) = sub.wait_for(STATS)
    assert st.json()["events_dropped"] == 7
    time.sleep(0.3)
    assert len(sub.messages(EMOTION)) == 5


def test_a_network_thread_that_dies_is_an_error_not_a_broker_away(
    broker: Broker, sinks: list[MqttSink], caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before, paho's thread died with a traceback (an IDNA UnicodeError here) and the sink said
    'not reachable ... events are buffered', with no thread left to ever send them."""
    caplog.set_level(logging.INFO, logger="edge_ser")
    cfg = broker.mqtt_config().model_copy(update={"host": "broker..lan"})  # past the check
    sink = MqttSink(cfg, device_id=DEV)
    sinks.append(sink)
    with pytest.raises(PublishError, match=r"network thread stopped \(UnicodeError: .*idna"):
        sink.start(wait_s=5)
    assert sink.failure is not None and not sink.connected
    assert not any("not reachable" in r.getMessage() for r in caplog.records)
    assert "Traceback" not in capsys.readouterr().err


def test_a_network_thread_that_dies_later_sets_the_failure(
    broker: Broker, sinks: list[MqttSink]
) -> None:
    sink = _sink(sinks, broker)
    sink.start(wait_s=5)
    assert sink.failure is None
    sink._client._host = "broker..lan"  # what the reconnect after the restart resolves
    broker.restart()
    _wait_until(lambda: sink.failure is not None, timeout=20)
    assert "network thread stopped (UnicodeError" in (sink.failure or "")
    assert not sink.connected


def test_a_lost_connection_names_its_cause(
    broker: Broker, sinks: list[MqttSink], caplog: pytest.LogCaptureFixture
) -> None:
    """Before: 'lost the connection to ... (Unspecified error)', whatever paho had seen."""
    caplog.set_level(logging.INFO, logger="edge_ser")
    sink = _sink(sinks, broker)
    sink.start(wait_s=5)
    broker.stop()
    _wait_until(lambda: not sink.connected)
    lost = [r.getMessage() for r in caplog.records if "lost the connection" in r.getMessage()]
    assert len(lost) == 1 and "Unspecified error" not in lost[0], lost
    assert re.search(r"\((Connection reset by peer|the broker closed it)\)", lost[0]), lost


def test_a_port_that_accepts_tcp_and_never_answers_is_described_as_such(
    sinks: list[MqttSink], broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: 'closed the connection before accepting it (Client is not connected. Socket:
    None). Last known Connection State: MQTT_CS_CONNECTING)', paho's state, not the cause."""
    import socket

    caplog.set_level(logging.DEBUG, logger="edge_ser.publish.mqtt")  # repeats are at DEBUG
    with socket.socket() as hole:  # accepts (the kernel does) and never says a word
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)
        sink = _sink(sinks, broker, port=hole.getsockname()[1], keepalive_s=5)
        sink.start()

        def said() -> list[str]:
            ours = [r.getMessage() for r in caplog.records if r.name == "edge_ser.publish.mqtt"]
            return [m for m in ours if m.startswith("mqtt broker")]

        _wait_until(lambda: len(said()) >= 2, timeout=30)  # the first two attempts
        sink.stop()
    for line in said():
        assert "accepted the TCP connection but never answered MQTT's CONNECT" in line, line
        assert "MQTT_CS" not in line and "Client is not connected" not in line, line


def test_two_clients_with_one_id_are_told_apart_and_back_off(
    broker: Broker, sinks: list[MqttSink], caplog: pytest.LogCaptureFixture
) -> None:
    """Two boards with the same device id took the session from each other every second,
    forever, each saying only 'lost the connection (Unspecified error)'."""
    from edge_ser.publish.client import TWIN_BACKOFF_S

    caplog.set_level(logging.INFO, logger="edge_ser")
    first, second = _sink(sinks, broker), _sink(sinks, broker)  # both kitchen-1
    first.start(wait_s=5)
    second.start(wait_s=5)

    def told() -> list[str]:
        return [r.getMessage() for r in caplog.records if "closed our session" in r.getMessage()]

    _wait_until(lambda: bool(told()), timeout=40)
    (line,) = told()
    assert "same client id 'edge-ser-kitchen-1'" in line and "own mqtt.device_id" in line, line
    assert f"reconnecting every {TWIN_BACKOFF_S} s" in line, line
    assert max(first.takeovers.backoff_s, second.takeovers.backoff_s) == TWIN_BACKOFF_S
    assert "already connected, closing old connection" in broker.log_text()


def test_a_broker_restart_is_not_taken_for_a_twin(
    broker: Broker, sinks: list[MqttSink], caplog: pytest.LogCaptureFixture
) -> None:
    """A restart drops the session too, but the broker is then away for a reconnect or more."""
    caplog.set_level(logging.INFO, logger="edge_ser")
    sink = _sink(sinks, broker)
    sink.start(wait_s=5)
    for _ in range(4):
        broker.stop()
        _wait_until(lambda: not sink.connected)
        time.sleep(1.5)  # the reconnect after 1 s finds no broker
        broker.start()
        assert sink.wait_connected(10)
    assert sink.takeovers.backoff_s == 0
    assert not any("closed our session" in r.getMessage() for r in caplog.records)


def test_takeovers_are_judged_against_the_reconnect_delay() -> None:
    """Twins each wait mqtt.reconnect_min_s before taking the session back: with a 15-s delay
    every taken session lives ~15 s, which a fixed 10-s bar never counted as short."""
    from edge_ser.publish.client import TakeoverWatch

    now = [0.0]
    slow = TakeoverWatch(clock=lambda: now[0], reconnect_s=15)
    fast = TakeoverWatch(clock=lambda: now[0])
    for _ in range(3):
        for watch in (slow, fast):
            watch.connected()
        now[0] += 16.0
        slow_backoff, fast_backoff = slow.ended(True), fast.ended(True)
    assert slow_backoff > 0 and slow.in_a_row == 3
    assert fast_backoff == 0 and fast.in_a_row == 0  # 16-s sessions with 1-s reconnects: fine
