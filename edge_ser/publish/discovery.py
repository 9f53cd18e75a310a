"""Home Assistant MQTT discovery: one retained config per sensor, grouped as one device.

Config topics: ``<discovery_prefix>/sensor/<device_id>/<object_id>/config``. The emotion sensor
reads ``emotion`` from the retained ``state`` topic and takes the whole state payload (scores,
confidence, arousal, valence, times) as attributes; arousal and valence come from the same
topic; the health sensors read the ``stats`` topic. Every config carries the availability
topic, a ``unique_id`` and the shared ``device`` block. The sink publishes them on every
(re)connect and again when Home Assistant announces ``online`` on ``<prefix>/status``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho

from edge_ser import __version__
from edge_ser.publish.sink import Topics, to_json

log = logging.getLogger(__name__)


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


def config_topic(discovery_prefix: str, device_id: str, object_id: str) -> str:
    return f"{discovery_prefix}/sensor/{device_id}/{object_id}/config"


def discovery_messages(
    topics: Topics, discovery_prefix: str, device_id: str, model_name: str
) -> list[tuple[str, str]]:
    """``(config topic, JSON payload)`` for every sensor, to publish retained."""
    device = device_block(device_id, model_name)
    out: list[tuple[str, str]] = []
    for s in SENSORS:
        source = topics.state if s.source == "state" else topics.stats
        cfg: dict[str, Any] = {
            "name": s.name,
            "unique_id": f"edge_ser_{device_id}_{s.object_id}",
            "state_topic": source,
            "value_template": "{{ value_json." + s.key + " }}",
            "availability_topic": topics.availability,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
            "origin": {"name": "edge-ser", "sw_version": __version__},
            **s.extra,
        }
        if s.object_id == "emotion":
            cfg["json_attributes_topic"] = topics.state
        out.append((config_topic(discovery_prefix, device_id, s.object_id), to_json(cfg)))
    return out


def parse_ha_status(payload: bytes) -> str | None:
    """``"online"``/``"offline"`` from Home Assistant's status topic; None (logged) otherwise."""
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        log.warning("ignoring Home Assistant status: payload is not UTF-8 (%d bytes)", len(payload))
        return None
    if text not in ("online", "offline"):
        log.warning("ignoring Home Assistant status: expected online/offline, got %.40r", text)
        return None
    return text


class Announcer:
    """Publishes the configs (retained) on every connect and when Home Assistant says
    ``online`` on its status topic; malformed status payloads are logged and ignored. A retained
    ``online`` (delivered on every subscribe) is no news: the connect has just published."""

    def __init__(self, messages: list[tuple[str, str]], status_topic: str) -> None:
        self.messages = messages
        self.status_topic = status_topic

    def attach(self, client: paho.Client) -> None:
        client.message_callback_add(self.status_topic, self._on_status)

    def on_connect(self, client: paho.Client) -> None:
        client.subscribe(self.status_topic, qos=1)
        self.publish(client)

    def publish(self, client: paho.Client) -> None:
        for topic, payload in self.messages:
            client.publish(topic, payload, qos=1, retain=True)

    def _on_status(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if parse_ha_status(bytes(msg.payload)) == "online" and not msg.retain:
            log.info("Home Assistant is online: republishing %d discovery configs",
                     len(self.messages))
            self.publish(client)
