"""Encoders: modules mapping a preprocessed waveform ``[B, N]`` to logits ``[B, 4]``."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from torch import nn

from edge_ser.errors import ConfigError

ENCODERS = ("compact", "distilhubert")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a (weights) file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_encoder(name: str, **kw: Any) -> nn.Module:
    """Build the named encoder (``compact`` or ``distilhubert``, the latter imported lazily)."""
    if name == "compact":
        from edge_ser_model.encoders.compact import CompactSER

        return CompactSER(**kw)
    if name == "distilhubert":
        from edge_ser_model.encoders.distilhubert import DistilHubertClassifier

        module: nn.Module = DistilHubertClassifier(**kw)
        return module
    raise ConfigError(f"encoder: unknown encoder {name!r} (choose from {', '.join(ENCODERS)})")
