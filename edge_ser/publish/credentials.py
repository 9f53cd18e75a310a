"""Credentials for the broker: user name + password (a file, or a systemd credential) and TLS
(CA, client certificate and key). Every problem is one ``PublishError`` line naming the key."""

from __future__ import annotations

import logging
import os
import ssl
import stat
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho

from edge_ser.config import MqttConfig, TlsConfig
from edge_ser.config.mqtt import MQTT_STRING_MAX
from edge_ser.errors import PublishError

log = logging.getLogger(__name__)


def find_credential(path: Path, config_dir: Path | None = None) -> Path:
    """An absolute path as is; a relative one in ``$CREDENTIALS_DIRECTORY`` first (systemd
    ``LoadCredential=``), else in the config file's folder, else the working directory."""
    if path.is_absolute():
        return path
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    for folder in (Path(cred_dir) if cred_dir else None, config_dir):
        if folder is not None and (folder / path).is_file():
            return folder / path
    return path if config_dir is None else config_dir / path


def read_password(path: Path, config_dir: Path | None = None) -> str:
    """The password in ``path`` (its first line, without the newline)."""
    real = find_credential(path, config_dir)
    try:
        text = real.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        also = " (nor in $CREDENTIALS_DIRECTORY)" if os.environ.get("CREDENTIALS_DIRECTORY") else ""
        raise PublishError(f"mqtt.password_file: {real}: no such file{also}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PublishError(f"mqtt.password_file: {real}: cannot read ({reason})") from exc
    password = text.splitlines()[0] if text else ""
    if not password:
        raise PublishError(f"mqtt.password_file: {real}: the file is empty")
    size = len(password.encode("utf-8"))
    if size > MQTT_STRING_MAX:  # paho's network thread died packing it
        raise PublishError(f"mqtt.password_file: {real}: the password is {size:,} bytes long; "
                           f"MQTT allows at most {MQTT_STRING_MAX:,}")
    log.debug("mqtt password read from %s", real)
    return password


def loose_permissions(path: Path, config_dir: Path | None = None) -> str | None:
    """A warning when users other than the file's owner may read the password file; None when
    only its owner may, or for systemd's copy in $CREDENTIALS_DIRECTORY (systemd sets that)."""
    real = find_credential(path, config_dir)
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir and real.parent == Path(cred_dir):
        return None
    try:
        mode = stat.S_IMODE(real.stat().st_mode)
    except OSError:
        return None
    who = [name for bit, name in ((stat.S_IRGRP, "its group"), (stat.S_IROTH, "everyone"))
           if mode & bit]
    if not who:
        return None
    return (f"mqtt.password_file: {real} is readable by {' and '.join(who)} (mode {mode:04o}): "
            f"chmod 600 {real} (under systemd: root-only, handed over by LoadCredential=)")


def apply_credentials(client: paho.Client, cfg: MqttConfig,
                      warn: Callable[[str], None] | None = None) -> None:
    """Set user name, password and TLS on a paho client, before it connects; ``warn`` gets
    what is allowed but unwise (default: a log warning)."""
    if cfg.username:  # a password file without a user name is refused by the config
        password = (read_password(cfg.password_file, cfg.config_dir) if cfg.password_file
                    else None)
        loose = (loose_permissions(cfg.password_file, cfg.config_dir) if cfg.password_file
                 else None)
        if loose is not None:
            (warn or _log_warning)(loose)
        client.username_pw_set(cfg.username, password)
    if cfg.tls is not None:
        apply_tls(client, cfg.tls)


def _log_warning(message: str) -> None:
    log.warning("%s", message)


def apply_tls(client: paho.Client, tls: TlsConfig) -> None:
    """TLS with the CA in ``tls.ca`` (None = the system's CAs) and an optional client cert."""
    for key in ("ca", "certfile", "keyfile"):
        path = getattr(tls, key)
        if path is not None and not path.is_file():
            raise PublishError(f"mqtt.tls.{key}: {path}: no such file")
    try:
        client.tls_set(
            ca_certs=str(tls.ca) if tls.ca else None,
            certfile=str(tls.certfile) if tls.certfile else None,
            keyfile=str(tls.keyfile) if tls.keyfile else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise PublishError(f"mqtt.tls: cannot load the certificates or key ({exc})") from exc
    if tls.insecure:
        client.tls_insecure_set(True)
