"""Home Assistant MQTT discovery: one retained config per sensor, grouped as one device.

Config topics: ``<discovery_prefix>/sensor/<device_id>/<object_id>/config``, and one ``event``
entity (``<discovery_prefix>/event/<device_id>/utterance/config``) fed by the ``emotion`` topic:
an event per utterance, for automations. The emotion sensor
reads ``emotion`` from the retained ``state`` topic and takes the whole state payload (scores,
confidence, arousal, valence, times) as attributes; arousal and valence come from the same
topic; the health sensors read the ``stats`` topic. Every config carries the availability
topic, a ``unique_id`` and the shared ``device`` block. The sink publishes them on every
(re)connect and again when Home Assistant announces ``online`` on ``<prefix>/status``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho

from edge_ser import LABELS, __version__
from edge_ser.publish.sink import Topics, to_json

log = logging.getLogger(__name__)

REPUBLISH_MIN_S = 10.0  # "online" again within this many seconds does not republish the configs
WARN_EVERY_S = 60.0  # a malformed status payload is logged at WARNING at most this often


@dataclass(frozen=True)
class Sensor:
    """One Home Assistant sensor: ``key`` in the payload of the ``source`` topic."""

    object_id: str
    name: str
    source: str  # "state" or "stats"
    key: str
    extra: dict[str, Any] = field(default_factory=dict)


_DIAG = {"entity_category": "diagnostic"}
_MEASURE = {"state_class": "measurement"}

#: The sensors announced to Home Assistant (object ids are part of their unique ids).
SENSORS: tuple[Sensor, ...] = (
    Sensor("emotion", "Emotion", "state", "emotion", {"icon": "mdi:emoticon-outline"}),
    Sensor("arousal", "Arousal", "state", "arousal", {**_MEASURE, "icon": "mdi:lightning-bolt"}),
    Sensor("valence", "Valence", "state", "valence", {**_MEASURE, "icon": "mdi:scale-balance"}),
    Sensor("windows_run", "Windows run", "stats", "windows_run",
           {**_DIAG, "state_class": "total_increasing", "icon": "mdi:counter"}),
    Sensor("windows_dropped", "Windows dropped", "stats", "windows_dropped",
           {**_DIAG, "state_class": "total_increasing", "icon": "mdi:counter"}),
    Sensor("latency_p95", "Latency p95", "stats", "latency_p95_ms",
           {**_DIAG, **_MEASURE, "device_class": "duration", "unit_of_measurement": "ms"}),
    Sensor("rss", "Memory (RSS)", "stats", "rss_mb",
           {**_DIAG, **_MEASURE, "device_class": "data_size", "unit_of_measurement": "MiB"}),
    Sensor("cpu", "CPU", "stats", "cpu_percent",
           {**_DIAG, **_MEASURE, "unit_of_measurement": "%", "icon": "mdi:cpu-64-bit"}),
    Sensor("temperature", "Temperature", "stats", "temperature_c",
           {**_DIAG, **_MEASURE, "device_class": "temperature", "unit_of_measurement": "°C"}),
    Sensor("throttle", "Throttle", "stats", "throttle", {**_DIAG, "icon": "mdi:speedometer-slow"}),
    Sensor("events_dropped", "Events dropped", "stats", "events_dropped",
           {**_DIAG, "state_class": "total_increasing", "icon": "mdi:counter"}),
)


def device_block(device_id: str, model_name: str) -> dict[str, Any]:
    """The ``device`` block shared by all sensors (groups them as one device in HA)."""
    return {
        "identifiers": [f"edge-ser-{device_id}"],
        "name": f"edge-ser {device_id}",
        "model": model_name or "edge-ser",
        "manufacturer": "edge-ser",
        "sw_version": __version__,
    }


def config_topic(discovery_prefix: str, device_id: str, object_id: str,
                 component: str = "sensor") -> str:
    return f"{discovery_prefix}/{component}/{device_id}/{object_id}/config"


#: The ``event`` entity's object id: one Home Assistant event per ``emotion`` message, so an
#: automation fires on every utterance (the emotion sensor's value does not change between
#: two angry ones, and the retained ``state`` keeps only the newest of a quick succession).
UTTERANCE = "utterance"
#: Renders an ``emotion`` payload as the JSON Home Assistant's MQTT event wants: ``event_type``
#: (the label) plus attributes. Every key read here is in every event (docs/mqtt.md).
UTTERANCE_TEMPLATE = ('{"event_type": "{{ value_json.emotion }}", '
                      '"confidence": {{ value_json.confidence }}, '
                      '"arousal": {{ value_json.arousal }}, "valence": {{ value_json.valence }}, '
                      '"speech_s": {{ value_json.speech_s }}}')


def discovery_messages(
    topics: Topics, discovery_prefix: str, device_id: str, model_name: str,
    mood_expire_s: int | None = None,
) -> list[tuple[str, str]]:
    """``(config topic, JSON payload)`` for every sensor and the event entity, to publish
    retained; ``mood_expire_s`` becomes the mood sensors' ``expire_after``."""
    shared = {  # every entity: its availability and the one device it belongs to
        "availability_topic": topics.availability,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device_block(device_id, model_name),
        "origin": {"name": "edge-ser", "sw_version": __version__},
    }
    out: list[tuple[str, str]] = []
    for s in SENSORS:
        source = topics.state if s.source == "state" else topics.stats
        cfg: dict[str, Any] = {
            "name": s.name,
            "unique_id": f"edge_ser_{device_id}_{s.object_id}",
            "state_topic": source,
            "value_template": "{{ value_json." + s.key + " }}",
            **shared,
            **s.extra,
        }
        if s.object_id == "emotion":
            cfg["json_attributes_topic"] = topics.state
        if s.source == "state" and mood_expire_s is not None:
            cfg["expire_after"] = mood_expire_s
        out.append((config_topic(discovery_prefix, device_id, s.object_id), to_json(cfg)))
    event: dict[str, Any] = {
        "name": "Utterance",
        "unique_id": f"edge_ser_{device_id}_{UTTERANCE}",
        "state_topic": topics.emotion,
        "event_types": list(LABELS),
        "value_template": UTTERANCE_TEMPLATE,
        **shared,
        "icon": "mdi:account-voice",
    }
    out.append((config_topic(discovery_prefix, device_id, UTTERANCE, "event"), to_json(event)))
    return out


def parse_ha_status(payload: bytes) -> tuple[str | None, str | None]:
    """(``"online"``/``"offline"``, None) from Home Assistant's status topic, or (None, why)."""
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None, f"payload is not UTF-8 ({len(payload)} bytes)"
    if text not in ("online", "offline"):
        return None, f"expected online/offline, got {text[:40]!r}"
    return text, None


class Announcer:
    """Publishes the configs (retained) on every connect and when Home Assistant says
    ``online`` on its status topic (that at most once per :data:`REPUBLISH_MIN_S`); malformed status
    payloads are ignored, with a warning at most once per :data:`WARN_EVERY_S`. A retained
    ``online`` (delivered on every subscribe) is no news: the connect has just published."""

    def __init__(self, messages: list[tuple[str, str]], status_topic: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.messages = messages
        self.status_topic = status_topic
        self._clock = clock
        self._republished_at = -float("inf")
        self._warned_at = -float("inf")
        self.ignored = 0  # status payloads that were not online/offline (count)

    def attach(self, client: paho.Client) -> None:
        client.message_callback_add(self.status_topic, self._on_status)

    def on_connect(self, client: paho.Client) -> None:
        client.subscribe(self.status_topic, qos=1)
        self.publish(client)

    def publish(self, client: paho.Client) -> None:
        for topic, payload in self.messages:
            client.publish(topic, payload, qos=1, retain=True)

    def _on_status(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        status, why = parse_ha_status(bytes(msg.payload))
        now = self._clock()
        if why is not None:
            self.ignored += 1
            if now - self._warned_at >= WARN_EVERY_S:
                self._warned_at = now
                log.warning("ignoring Home Assistant status on %s: %s (%d ignored so far)",
                            self.status_topic, why, self.ignored)
            return
        if status != "online" or msg.retain:
            return
        if now - self._republished_at < REPUBLISH_MIN_S:  # a flood of "online": once will do
            log.debug("Home Assistant online again within %.0f s: configs not republished",
                      REPUBLISH_MIN_S)
            return
        self._republished_at = now
        log.info("Home Assistant is online: republishing %d discovery configs", len(self.messages))
        self.publish(client)
