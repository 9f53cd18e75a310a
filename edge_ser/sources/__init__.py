"""Audio sources (``mic``, ``file``, ``stdin``) behind one interface, chosen by config."""

from __future__ import annotations

from typing import IO

from edge_ser.config import SourceConfig
from edge_ser.errors import ConfigError
from edge_ser.sources.base import AudioSource, DoneFn, PushFn, StreamResampler
from edge_ser.sources.devices import BackendFactory
from edge_ser.sources.file import FileSource
from edge_ser.sources.mic import MicSource
from edge_ser.sources.stdin import StdinSource

__all__ = [
    "AudioSource", "DoneFn", "FileSource", "MicSource", "PushFn", "StdinSource",
    "StreamResampler", "make_source",
]


def make_source(
    cfg: SourceConfig, stdin: IO[bytes] | None = None, backend: BackendFactory | None = None
) -> AudioSource:
    """The source ``cfg.type`` names. ``stdin``/``backend`` replace the real ones in tests."""
    if cfg.type == "file":
        if cfg.path is None:
            raise ConfigError("source.path: source.type 'file' needs a WAV path")
        return FileSource(cfg.path, realtime=cfg.realtime, loop=cfg.loop, chunk_ms=cfg.chunk_ms)
    if cfg.type == "stdin":
        return StdinSource(
            rate=cfg.rate or 16000, channels=cfg.channels, chunk_ms=cfg.chunk_ms,
            live=cfg.realtime, stream=stdin,
        )
    return MicSource(
        device=cfg.device, rate=cfg.rate, channels=cfg.channels, chunk_ms=cfg.chunk_ms,
        reopen_min_s=cfg.reopen_min_s, reopen_max_s=cfg.reopen_max_s, backend=backend,
    )
