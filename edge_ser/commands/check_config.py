"""``edge-ser check-config PATH``: validate a config file (and the files it names), then exit.

Prints ``ok`` and exits 0, or prints the one-line error (file, line, key) and exits 2. Checks
what the daemon cannot run with (``voice_note`` pooling of a source that never ends), that the
model file and the WAV file of a ``file`` source exist and can be read (the WAV's header too),
that the model loads in onnxruntime and follows the model contract (input, output, labels,
window: :func:`edge_ser.model.read_model_info`, the daemon's own check), and loads the MQTT
password file and the TLS files as the daemon would. A password file that others than its
owner may read is a ``warning:`` line on stderr (exit 0 still).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edge_ser.config import Config, load_config
from edge_ser.errors import ConfigError, not_a_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="YAML config file to check")


def _need_file(path: Path | None, key: str, cfg: Config) -> None:
    """``path`` exists, is a file, this user can read it, and it is not empty."""
    if path is None:
        return
    if path.is_dir():  # also what an empty value ("") resolves to: the config's folder
        raise ConfigError(f"{cfg.where(key)}: {key}: {path} is a folder, not a file")
    if not path.is_file():
        why = not_a_file(path)
        if why == "no such file":
            raise ConfigError(f"{cfg.where(key)}: {key}: no such file {path}")
        raise ConfigError(f"{cfg.where(key)}: {key}: {path} {why}")
    try:
        with path.open("rb") as f:
            empty = not f.read(1)
    except OSError as exc:  # e.g. the service user may not read it
        raise ConfigError(f"{cfg.where(key)}: {key}: cannot read {path} "
                          f"({exc.strerror or exc})") from exc
    if empty:
        raise ConfigError(f"{cfg.where(key)}: {key}: {path} is empty")


def check_files(cfg: Config) -> None:
    """Raise :class:`ConfigError` (file:line: key) for a referenced file that does not exist,
    cannot be read, or (the WAV of a file source, the broker's password and TLS files) that the
    daemon could not load."""
    _need_file(cfg.model.path, "model.path", cfg)
    from edge_ser.errors import ModelError
    from edge_ser.model import read_model_info

    try:  # a corrupt download or a model of another contract, before systemctl enable
        info = read_model_info(cfg.model.path)
    except ModelError as exc:
        raise ConfigError(f"{cfg.where('model.path')}: model.path: {exc}") from exc
    from edge_ser import SAMPLE_RATE
    from edge_ser.pipeline import check_window_length

    check_window_length(cfg, info.window_samples / SAMPLE_RATE, info.name)
    if cfg.source.type == "mic":  # the device itself is not opened: see `edge-ser devices`
        from edge_ser.sources.devices import NO_PYAUDIO, pyaudio_installed

        if not pyaudio_installed():
            raise ConfigError(f"{cfg.where('source.type')}: source.type: mic, but {NO_PYAUDIO}")
    if cfg.source.type == "file":
        _need_file(cfg.source.path, "source.path", cfg)
        from edge_ser.audio import WavFile
        from edge_ser.errors import AudioError

        try:
            WavFile(cfg.source.path or "").close()  # the header: format, rate, length
        except AudioError as exc:
            raise ConfigError(f"{cfg.where('source.path')}: source.path: {exc}") from exc
    if cfg.mqtt.host is not None:
        import paho.mqtt.client as paho

        from edge_ser.errors import PublishError
        from edge_ser.publish.credentials import apply_credentials, apply_tls

        client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        def warn(message: str) -> None:
            key = message.split(":", 1)[0]
            print(f"edge-ser check-config: warning: {cfg.where(key)}: {message}",
                  file=sys.stderr)

        try:  # exactly what the daemon does before it connects
            apply_credentials(client, cfg.mqtt, warn)
        except PublishError as exc:
            if not _for_systemd(cfg, exc):
                raise _at_its_key(cfg, exc) from exc
            print(f"edge-ser check-config: note: {exc}: the service gets it from systemd "
                  "(LoadCredential=, read as root), so it is not checked here", file=sys.stderr)
            if cfg.mqtt.tls is not None:
                try:
                    apply_tls(client, cfg.mqtt.tls)
                except PublishError as tls_exc:
                    raise _at_its_key(cfg, tls_exc) from tls_exc


def _at_its_key(cfg: Config, exc: Exception) -> ConfigError:
    """A credentials error (``mqtt.tls.ca: ...``) at the config line of the key it names."""
    key = str(exc).split(":", 1)[0].split(" ", 1)[0]
    return ConfigError(f"{cfg.where(key)}: {exc}")


def _for_systemd(cfg: Config, exc: Exception) -> bool:
    """A root-only password file named for ``LoadCredential=``, checked outside systemd."""
    pw = cfg.mqtt.password_file
    return (pw is not None and not pw.is_absolute() and "CREDENTIALS_DIRECTORY" not in os.environ
            and "Permission denied" in str(exc))


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.path)
    cfg.check_daemon()
    check_files(cfg)
    print("ok")
    return 0
