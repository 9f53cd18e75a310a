"""Home Assistant discovery: the config payloads, and their life on a real broker."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_ser import LABELS, __version__
from edge_ser.config import MqttConfig
from edge_ser.publish import discovery
from edge_ser.publish.discovery import SENSORS, Announcer, discovery_messages, parse_ha_status
from edge_ser.publish.mqtt import MqttSink
from edge_ser.publish.sink import STATE_KEYS, Topics
from tests.conftest import REPO
from tests.fixtures_broker import Broker, Subscriber

VOICE_NOTE = REPO / "examples" / "voice-note.wav"
CLIPS = REPO / "examples" / "clips"

DEV = "hall"
EVENT_TOPIC = f"homeassistant/event/{DEV}/utterance/config"
CONFIG_TOPICS = [f"homeassistant/sensor/{DEV}/{s.object_id}/config" for s in SENSORS] + [
    EVENT_TOPIC]
STATS_KEYS = {"windows_run", "windows_dropped", "latency_p95_ms", "rss_mb", "cpu_percent",
              "temperature_c", "throttle", "events_dropped"}


def _configs() -> dict[str, dict[str, object]]:
    topics = Topics.of(MqttConfig.model_validate({"host": "x"}), DEV)
    return {t: json.loads(p) for t, p in discovery_messages(topics, "homeassistant", DEV, "m-int8")}


def test_every_sensor_has_a_retained_config_shape() -> None:
    configs = _configs()
    assert sorted(configs) == sorted(CONFIG_TOPICS)
    names = {t.split("/")[3] for t in configs}
    assert {"emotion", "arousal", "valence", "windows_run", "windows_dropped", "latency_p95",
            "rss", "cpu", "temperature", "throttle"} <= names
    unique = {c["unique_id"] for c in configs.values()}
    assert len(unique) == len(configs)
    devices = [c["device"] for c in configs.values()]
    assert all(d == devices[0] for d in devices)
    assert devices[0] == {"identifiers": [f"edge-ser-{DEV}"], "name": f"edge-ser {DEV}",
                          "model": "m-int8", "manufacturer": "edge-ser",
                          "sw_version": __version__}
    for c in configs.values():
        assert c["availability_topic"] == f"edge-ser/{DEV}/availability"
        assert c["state_topic"] in (f"edge-ser/{DEV}/state", f"edge-ser/{DEV}/stats",
                                    f"edge-ser/{DEV}/emotion")


def test_utterance_event_renders_every_real_event_for_home_assistant(tmp_path: Path) -> None:
    """The event entity's template turns each emotion message (as the daemon publishes it)
    into the JSON Home Assistant's MQTT event wants: an ``event_type`` of its list, plus
    attributes. Rendered with Jinja2, the template engine Home Assistant uses."""
    jinja2 = pytest.importorskip("jinja2")
    event = _configs()[EVENT_TOPIC]
    assert event["state_topic"] == f"edge-ser/{DEV}/emotion"
    assert event["event_types"] == list(LABELS)
    template = jinja2.Environment().from_string(str(event["value_template"]))
    proc = subprocess.run([sys.executable, "-m", "edge_ser", "classify", "--format", "jsonl",
                           str(VOICE_NOTE), *sorted(map(str, CLIPS.glob("*.wav")))[:3]],
                          capture_output=True, text=True, timeout=120, check=True)
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 4
    for row in rows:
        row.pop("file")
        rendered = json.loads(template.render(value_json=row))
        assert rendered["event_type"] == row["emotion"] and rendered["event_type"] in LABELS
        assert rendered["confidence"] == row["confidence"]
        assert set(rendered) == {"event_type", "confidence", "arousal", "valence", "speech_s"}


def test_value_templates_read_documented_keys() -> None:
    for topic, c in _configs().items():
        if topic == EVENT_TOPIC:  # a JSON template over the emotion topic: tested above
            continue
        key = str(c["value_template"]).removeprefix("{{ value_json.").removesuffix(" }}")
        if str(c["state_topic"]).endswith("/state"):
            assert key in STATE_KEYS, topic
        else:
            assert key in STATS_KEYS, topic
    emotion = _configs()[f"homeassistant/sensor/{DEV}/emotion/config"]
    assert emotion["json_attributes_topic"] == f"edge-ser/{DEV}/state"
    temp = _configs()[f"homeassistant/sensor/{DEV}/temperature/config"]
    assert (temp["device_class"], temp["unit_of_measurement"]) == ("temperature", "°C")


@pytest.mark.parametrize("raw", [b"\xff\xfe\x00", b"", b"maybe", b'{"status": "online"}'])
def test_malformed_ha_status_is_refused_with_a_reason(raw: bytes) -> None:
    status, why = parse_ha_status(raw)
    assert status is None and why and "\n" not in why


def test_ha_status_values() -> None:
    assert parse_ha_status(b"online") == ("online", None)
    assert parse_ha_status(b"offline\n") == ("offline", None)


class _Client:
    def __init__(self) -> None:
        self.published: list[str] = []

    def publish(self, topic: str, payload: str, qos: int = 0, retain: bool = False) -> None:
        self.published.append(topic)


def test_status_floods_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    """A chatty or broken status topic: one warning a minute, one republish per 10 s."""
    now = [1000.0]
    ann = Announcer([("t/a", "{}"), ("t/b", "{}")], "homeassistant/status", clock=lambda: now[0])
    client = _Client()

    def say(payload: bytes, retain: bool = False) -> None:
        ann._on_status(client, None, SimpleNamespace(payload=payload, retain=retain))  # type: ignore[arg-type]

    caplog.set_level(logging.WARNING)
    for _ in range(50):
        say(b"garbage")
        say(b"online")
    assert ann.ignored == 50 and len(caplog.records) == 1
    assert "ignoring Home Assistant status" in caplog.records[0].getMessage()
    assert client.published == ["t/a", "t/b"]  # once, not 50 times
    say(b"online", retain=True)
    now[0] += discovery.REPUBLISH_MIN_S
    say(b"online")
    assert len(client.published) == 4
    now[0] += discovery.WARN_EVERY_S
    say(b"\xff")
    assert len(caplog.records) == 2 and "51 ignored so far" in caplog.records[1].getMessage()


@pytest.fixture
def sink(broker: Broker) -> Iterator[MqttSink]:
    s = MqttSink(broker.mqtt_config(), device_id=DEV, model_name="m-int8")
    yield s
    s.stop()


def _say(broker: Broker, topic: str, payload: bytes, retain: bool = False) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="fake-home-assistant")
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


@pytest.mark.broker
def test_configs_retained_and_republished_when_ha_comes_online(
    broker: Broker, make_subscriber: Callable[..., Subscriber], sink: MqttSink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = make_subscriber(broker, ["homeassistant/sensor/#", "homeassistant/event/#"])
    sink.start(wait_s=5)
    for topic in CONFIG_TOPICS:
        first.wait_for(topic)
    # joins after: gets the retained copies
    late = make_subscriber(broker, ["homeassistant/sensor/#", "homeassistant/event/#"])
    for topic in CONFIG_TOPICS:
        (msg,) = late.wait_for(topic)
        assert msg.retain and msg.json()["device"]["model"] == "m-int8"
    late.clear()
    caplog.set_level(logging.WARNING)
    _say(broker, "homeassistant/status", b"\xff garbage")
    _say(broker, "homeassistant/status", b"online")
    for topic in CONFIG_TOPICS:
        late.wait_for(topic)
    assert all(len(late.messages(t)) == 1 for t in CONFIG_TOPICS)  # garbage: ignored
    assert any("ignoring Home Assistant status" in r.getMessage() for r in caplog.records)
    assert sink.connected


@pytest.mark.broker
def test_retained_ha_online_does_not_publish_the_configs_twice(
    broker: Broker, make_subscriber: Callable[..., Subscriber], sink: MqttSink,
) -> None:
    """Home Assistant retains its birth message, so every subscribe delivers an old "online":
    that is no news, the connect has just published the configs."""
    _say(broker, "homeassistant/status", b"online", retain=True)
    first = make_subscriber(broker, ["homeassistant/sensor/#", "homeassistant/event/#"])
    sink.start(wait_s=5)
    for topic in CONFIG_TOPICS:
        first.wait_for(topic)
    events = make_subscriber(broker, [f"edge-ser/{DEV}/emotion"])
    sink.publish_event({"seq": 1})  # a round trip after the retained status reached the sink
    events.wait_for(f"edge-ser/{DEV}/emotion")
    time.sleep(0.5)
    assert all(len(first.messages(t)) == 1 for t in CONFIG_TOPICS)


@pytest.mark.broker
def test_discovery_off_publishes_no_configs(
    broker: Broker, subscriber: Subscriber
) -> None:
    s = MqttSink(broker.mqtt_config(discovery=False), device_id=DEV)
    try:
        s.start(wait_s=5)
        s.publish_event({"seq": 1})  # events follow the (re)connect announcements
        subscriber.wait_for(f"edge-ser/{DEV}/emotion")
        assert not [t for t in subscriber.all_topics() if t.startswith("homeassistant/")]
    finally:
        s.stop()


def test_mood_expiry_reaches_the_mood_sensors_only() -> None:
    topics = Topics.of(MqttConfig.model_validate({"host": "x"}), DEV)
    assert all("expire_after" not in json.loads(p) for _, p in
               discovery_messages(topics, "homeassistant", DEV, "m"))
    configs = {t.split("/")[3]: json.loads(p) for t, p in
               discovery_messages(topics, "homeassistant", DEV, "m", mood_expire_s=900)}
    expiring = {k for k, c in configs.items() if c.get("expire_after") == 900}
    assert expiring == {"emotion", "arousal", "valence"}
    with pytest.raises(ValueError, match="mood_expire_s"):
        MqttConfig.model_validate({"host": "x", "mood_expire_s": 0})


def test_docs_withdrawal_loop_names_every_config() -> None:
    """docs/mqtt.md's "withdraw the device" commands clear every retained config we publish."""
    text = (REPO / "docs" / "mqtt.md").read_text(encoding="utf-8")
    loop = text[text.index("for obj in "):text.index("; do", text.index("for obj in "))]
    assert loop.replace("\\\n", " ").split()[3:] == [s.object_id for s in SENSORS]
    assert "homeassistant/event/<id>/utterance/config" in text
