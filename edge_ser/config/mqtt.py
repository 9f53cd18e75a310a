"""The ``mqtt`` section of the config: broker, credentials, TLS, topics and delivery."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, model_validator

from edge_ser.config.base import Strict as _Strict


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
        description="Device id in topics (letters, digits, '_', '-'); null = host name.",
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
        1000, ge=1, description="Events kept while the broker is away (count); oldest dropped."
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
        return self
