"""The ``mqtt`` section of the config: broker, credentials, TLS, topics and delivery."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, model_validator

from edge_ser.config.base import Strict as _Strict

#: MQTT's length limit for a string (host, user name, password, client id, topic), in bytes
MQTT_STRING_MAX = 65_535
#: Memory an event takes in the offline buffer (KiB): measured with tracemalloc for a 60-s
#: utterance (8 windows; 0.6 KiB for one window), see docs/mqtt.md
EVENT_KIB = 1.5
BUFFER_EVENTS_MAX = 100_000  # 146 MiB of events at EVENT_KIB
#: A DNS name's length limit, in bytes (host names longer than this are never resolvable)
DNS_NAME_MAX = 253
#: The longest default device id: a host name (at most 64) + "-" + 6 hex digits
DEFAULT_DEVICE_ID_MAX = 71
#: What the longest topics add to <prefix> and <device_id>: "/" + "/availability", and
#: "/sensor/" + "/windows_dropped/config" after <discovery_prefix>
_TOPIC_TAIL = len("//availability")
_DISCOVERY_TAIL = len("/sensor//windows_dropped/config")


class TlsConfig(_Strict):
    ca: Path | None = Field(None, description="CA certificate file (PEM) to verify the broker.")
    certfile: Path | None = Field(None, description="Client certificate file (PEM).")
    keyfile: Path | None = Field(None, description="Client private key file (PEM).")
    insecure: bool = Field(False, description="Skip broker hostname verification (testing only).")

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TlsConfig:
        if self.keyfile is not None and self.certfile is None:
            raise ValueError("mqtt.tls.keyfile is set but mqtt.tls.certfile is not")
        return self


class MqttConfig(_Strict):
    host: str | None = Field(
        None, min_length=1,
        description="Broker host name or address; null = print events as JSON lines.",
    )
    port: int = Field(1883, ge=1, le=65535, description="Broker TCP port.")
    client_id: str | None = Field(None, description="MQTT client id; null = edge-ser-<device_id>.")
    username: str | None = Field(None, description="MQTT user name.")
    password_file: Path | None = Field(
        None,
        description="File holding the MQTT password; a relative name is looked up in "
        "$CREDENTIALS_DIRECTORY first (systemd LoadCredential=).",
    )
    tls: TlsConfig | None = Field(None, description="TLS settings; null = plain TCP.")
    prefix: str = Field(
        "edge-ser", pattern=r"^[^#+\s\x00-\x1f\x7f]+$",
        description="Topic prefix (no MQTT wildcards, spaces or control characters).",
    )
    device_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]+$",
        description="Device id in topics and Home Assistant ids (letters, digits, '_', '-'); "
        "null = the host name, '-' and 6 hex digits from /etc/machine-id (e.g. "
        "raspberrypi-3fa2c1: the same on every start, different on every board).",
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive in seconds.")
    qos: Literal[0, 1, 2] = Field(1, description="QoS of emotion events.")
    reconnect_min_s: int = Field(
        1, ge=1, description="First reconnect delay in whole seconds."
    )
    reconnect_max_s: int = Field(
        60, ge=1, description="Largest reconnect delay in whole seconds (doubling from the first)."
    )
    buffer_events: int = Field(
        1000, ge=1, le=BUFFER_EVENTS_MAX,
        description="Events kept while the broker is away (count, at most 100000, and their "
        f"memory, {EVENT_KIB} KiB each, at most half of budgets.memory.rss_mb); oldest dropped.",
    )
    discovery: bool = Field(True, description="Publish Home Assistant discovery configs.")
    discovery_prefix: str = Field(
        "homeassistant", pattern=r"^[^#+\s\x00-\x1f\x7f]+$",
        description="Home Assistant discovery prefix (no MQTT wildcards).",
    )
    mood_expire_s: int | None = Field(
        None, ge=1, le=7 * 86400,
        description="Home Assistant: whole seconds after the last event when the mood sensors "
        "(emotion, arousal, valence) turn 'unavailable' (discovery expire_after); null = they "
        "keep the last mood until the next event.",
    )
    stats_interval_s: float = Field(60.0, gt=0, description="Period of the stats topic, seconds.")
    connect_wait_s: float = Field(
        10.0, ge=0, le=3600,
        description="At start-up, wait this long (seconds) for the broker; a refusal "
        "(credentials, TLS) within it stops the daemon, an unreachable broker does not.",
    )
    stop_flush_s: float = Field(
        5.0, ge=0, le=9,
        description="On stop, wait this long (seconds) for buffered events to go out; at most 9 "
        "so that the 5-s grace after it fits the unit's TimeoutStopSec=15.",
    )

    #: the folder of the config file it came from (set by the loader; None = built in)
    _config_dir: Path | None = PrivateAttr(None)

    @property
    def config_dir(self) -> Path | None:
        return self._config_dir

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("mqtt.reconnect_min_s must not exceed mqtt.reconnect_max_s")
        if self.password_file is not None and not self.username:
            raise ValueError("mqtt.password_file is set but mqtt.username is not")
        if self.host is not None and re.fullmatch(r"[^:\[\]]+:\d+", self.host):
            raise ValueError("mqtt.host must be a host name or address without ':port' "
                             "(the port is mqtt.port)")
        if self.host is not None and "://" in self.host:
            raise ValueError("mqtt.host must be a host name or address, not a URL "
                             "(mqtt.port and mqtt.tls say the rest)")
        if self.host is not None and any(c.isspace() for c in self.host):  # ' ' too
            raise ValueError("mqtt.host must be a host name or address, without spaces")
        if self.host is not None:
            _check_host(self.host)
        for key in ("username", "client_id"):
            _check_mqtt_string(f"mqtt.{key}", getattr(self, key))
        self._check_topic_lengths()
        return self

    def _check_topic_lengths(self) -> None:
        """paho packs topics (the last will's too) as MQTT strings: one over 65,535 bytes
        killed its network thread."""
        dev = len(self.device_id) if self.device_id else DEFAULT_DEVICE_ID_MAX
        for key, prefix, tail in (("mqtt.prefix", self.prefix, _TOPIC_TAIL),
                                  ("mqtt.discovery_prefix", self.discovery_prefix,
                                   _DISCOVERY_TAIL)):
            size = len(prefix.encode("utf-8")) + dev + tail
            if size > MQTT_STRING_MAX:
                blame = "mqtt.device_id" if self.device_id and dev > len(prefix) else key
                raise ValueError(f"{blame} makes topics {size:,} bytes long; MQTT allows at "
                                 f"most {MQTT_STRING_MAX:,}")


def _shown(text: str, limit: int = 40) -> str:
    return repr(text[:limit]) + (f"... ({len(text):,} characters)" if len(text) > limit else "")


def _check_host(host: str) -> None:
    """What the socket layer would refuse (in paho's network thread, which then died): a host
    name it cannot encode as IDNA (an empty label, ``broker..lan``, or one over 63 characters)
    or one longer than any DNS name."""
    try:
        encoded = host.encode("idna")
    except UnicodeError as exc:
        why = exc.__cause__ or exc
        raise ValueError(f"mqtt.host {_shown(host)} is not a valid host name ({why}: each part "
                         "between dots must be 1-63 characters)") from None
    if len(encoded.rstrip(b".")) > DNS_NAME_MAX:
        raise ValueError(f"mqtt.host {_shown(host)} is longer than a host name can be "
                         f"({DNS_NAME_MAX} characters)")


def _check_mqtt_string(key: str, value: str | None) -> None:
    if value is None:
        return
    size = len(value.encode("utf-8"))
    if size > MQTT_STRING_MAX:
        raise ValueError(f"{key} is {size:,} bytes long; MQTT allows at most {MQTT_STRING_MAX:,}")
    if "\x00" in value:
        raise ValueError(f"{key} holds a NUL character, which MQTT does not allow")
