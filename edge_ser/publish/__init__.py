"""Event publishing: the :class:`EventSink` interface, a stdout and an MQTT implementation.

``make_sink(cfg.mqtt, device_id, model_name)`` picks one; see ``docs/mqtt.md``.
"""

from __future__ import annotations

from edge_ser.publish.outbox import Outbox
from edge_ser.publish.sink import (
    EventSink,
    Topics,
    make_sink,
    resolve_device_id,
    state_from_event,
    to_json,
)
from edge_ser.publish.stdout import StdoutSink

__all__ = [
    "EventSink", "Outbox", "StdoutSink", "Topics", "make_sink", "resolve_device_id",
    "state_from_event", "to_json",
]
