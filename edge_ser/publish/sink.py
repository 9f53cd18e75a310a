"""The event-sink interface, topic names, payload helpers and the sink factory.

``make_sink(cfg, device_id, model_name)`` gives a :class:`~edge_ser.publish.stdout.StdoutSink`
when ``mqtt.host`` is null (JSON lines on stdout) and an
:class:`~edge_ser.publish.mqtt.MqttSink` otherwise. Payload schemas: ``docs/mqtt.md``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

from edge_ser.config import MqttConfig
from edge_ser.errors import PublishError

log = logging.getLogger(__name__)

#: What a device id may contain (MQTT topic level and Home Assistant node id).
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")
#: Keys of the retained ``state`` payload, taken from an emotion event.
STATE_KEYS: tuple[str, ...] = (
    "emotion", "confidence", "scores", "arousal", "valence", "start_s", "end_s", "speech_s",
    "model", "time",
)


class EventSink(Protocol):
    """Where the daemon sends what it finds. Methods never block on the network."""

    def start(self, wait_s: float = 0.0, cancel: Callable[[], bool] | None = None) -> None:
        """Connect (in the background) and announce the device; with ``wait_s`` > 0 wait that
        long for the broker (or until ``cancel()`` is true: a stop signal) and raise
        :class:`PublishError` if it refuses us (credentials, TLS)."""

    def wait_connected(self, timeout: float, cancel: Callable[[], bool] | None = None) -> bool:
        """True once connected; False after ``timeout`` s or once ``cancel()`` is true;
        PublishError for a permanent refusal."""

    def publish_event(self, event: dict[str, Any]) -> None:
        """An emotion event (QoS ``mqtt.qos``, not retained; buffered while the broker is away)."""

    def publish_state(self, state: dict[str, Any]) -> None:
        """The retained current mood (see :func:`state_from_event`)."""

    def publish_stats(self, stats: dict[str, Any]) -> None:
        """Periodic health figures (not retained; skipped while the broker is away)."""

    def stop(self) -> None:
        """Flush, publish ``offline`` (retained) and disconnect. Idempotent."""

    @property
    def dropped(self) -> int:
        """Events dropped from the offline buffer (count)."""

    #: events still undelivered when :meth:`stop` returned (count; lost with the process)
    undelivered: int
    #: why the sink can never deliver again (paho's network thread died), else None: the
    #: daemon stops and exits with it rather than buffer for a broker it will never reach
    failure: str | None

    @property
    def connected(self) -> bool:
        """True while connected to the broker (always True for stdout)."""


@dataclass(frozen=True)
class Topics:
    """All topics of one device."""

    availability: str
    emotion: str
    state: str
    stats: str
    ha_status: str

    @classmethod
    def of(cls, cfg: MqttConfig, device_id: str) -> Topics:
        base = f"{cfg.prefix.rstrip('/')}/{device_id}"
        return cls(
            availability=f"{base}/availability", emotion=f"{base}/emotion",
            state=f"{base}/state", stats=f"{base}/stats",
            ha_status=f"{cfg.discovery_prefix}/status",
        )


#: Where the machine id is (machine-id(5)); the second is the older D-Bus location.
MACHINE_ID_FILES: tuple[Path, ...] = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))
_MACHINE_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_APP_KEY = b"edge-ser device id"  # the machine id itself is confidential: only a keyed hash


def machine_tag(files: Sequence[Path] = MACHINE_ID_FILES) -> str | None:
    """6 hex digits unique to this installation and stable across reboots: a keyed hash of the
    machine id (as sd_id128_get_machine_app_specific does); None when there is no valid one."""
    for path in files:
        try:
            text = path.read_text(encoding="ascii").strip().lower()
        except (OSError, UnicodeDecodeError):
            continue
        if _MACHINE_ID_RE.match(text):  # not "uninitialized", not empty
            return hmac.new(bytes.fromhex(text), _APP_KEY, hashlib.sha256).hexdigest()[:6]
    return None


def resolve_device_id(cfg: MqttConfig, machine_id_files: Sequence[Path] = MACHINE_ID_FILES) -> str:
    """``mqtt.device_id``; else the host name (anything outside ``[A-Za-z0-9_-]`` as ``_``),
    a ``-`` and :func:`machine_tag`: boards that all came up as ``raspberrypi`` differ."""
    if cfg.device_id is not None:
        return check_device_id(cfg.device_id)
    host = socket.gethostname().split(".")[0][:64] or "edge-ser"
    host = re.sub(r"[^A-Za-z0-9_-]", "_", host)
    tag = machine_tag(machine_id_files)
    if tag is None:
        log.info("no machine id in %s: the device id is the host name %s",
                 " or ".join(map(str, machine_id_files)), host)
        return host
    log.info("device id %s-%s (host name and a tag of this board's machine id); the topics of "
             "an install from before this default were under %s: set mqtt.device_id: %s to "
             "keep them", host, tag, host, host)
    return f"{host}-{tag}"


def check_device_id(device_id: str) -> str:
    if not DEVICE_ID_RE.match(device_id):
        raise PublishError(
            f"mqtt.device_id: {device_id!r} may only hold letters, digits, '_' and '-'"
        )
    return device_id


def state_from_event(event: dict[str, Any]) -> dict[str, Any]:
    """The retained ``state`` payload for an emotion event (the keys in :data:`STATE_KEYS`)."""
    return {k: event[k] for k in STATE_KEYS if k in event}


def _finite(obj: Any) -> Any:
    """NaN and infinities as null: JSON has no such numbers (jq and Home Assistant refuse them)."""
    if hasattr(obj, "tolist"):  # numpy scalars and arrays, without importing numpy
        obj = obj.tolist()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json_default(obj: Any) -> Any:  # numpy was turned into lists and numbers by _finite
    if hasattr(obj, "__fspath__"):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def to_json(payload: dict[str, Any]) -> str:
    """Compact JSON for a payload; numpy numbers become plain numbers."""
    try:
        return json.dumps(_finite(payload), separators=(",", ":"), default=_json_default,
                          allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PublishError(f"cannot encode payload as JSON: {exc}") from exc


def make_sink(
    cfg: MqttConfig, device_id: str, model_name: str, stream: TextIO | None = None
) -> EventSink:
    """A :class:`StdoutSink` when ``cfg.host`` is null, else an :class:`MqttSink`.

    ``stream`` (stdout sink only) defaults to the current ``sys.stdout``.
    """
    check_device_id(device_id)
    if cfg.host is None:
        from edge_ser.publish.stdout import StdoutSink

        log.info("no mqtt.host configured: events go to stdout as JSON lines")
        return StdoutSink(stream if stream is not None else sys.stdout, model_name=model_name)
    from edge_ser.publish.mqtt import MqttSink

    return MqttSink(cfg, device_id=device_id, model_name=model_name)
