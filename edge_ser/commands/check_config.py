"""``edge-ser check-config PATH``: validate a config file (and the files it names), then exit.

Prints ``ok`` and exits 0, or prints the one-line error (file, line, key) and exits 2. Checks
that the model file, the WAV file of a ``file`` source, the TLS files and the MQTT password file
exist; onnxruntime is never loaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_ser.config import Config, load_config
from edge_ser.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="YAML config file to check")


def _need_file(path: Path | None, key: str, source: str) -> None:
    if path is not None and not path.is_file():
        raise ConfigError(f"{source}: {key}: no such file {path}")


def _password_path(cfg: Config) -> Path | None:
    from edge_ser.publish.credentials import find_credential  # $CREDENTIALS_DIRECTORY first

    p = cfg.mqtt.password_file
    return None if p is None else find_credential(p)


def check_files(cfg: Config, source: str) -> None:
    """Raise :class:`ConfigError` for a referenced file that does not exist."""
    _need_file(cfg.model.path, "model.path", source)
    if cfg.source.type == "file":
        _need_file(cfg.source.path, "source.path", source)
    if cfg.mqtt.tls is not None:
        _need_file(cfg.mqtt.tls.ca, "mqtt.tls.ca", source)
        _need_file(cfg.mqtt.tls.certfile, "mqtt.tls.certfile", source)
        _need_file(cfg.mqtt.tls.keyfile, "mqtt.tls.keyfile", source)
    if cfg.mqtt.host is not None:
        _need_file(_password_path(cfg), "mqtt.password_file", source)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.path)
    check_files(cfg, args.path)
    print("ok")
    return 0
