"""``edge-ser run --config PATH``: the daemon (see :mod:`edge_ser.daemon`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from edge_ser.config import load_config
from edge_ser.errors import AudioError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", metavar="PATH", default=None,
        help="YAML config file (default: built-in defaults: default microphone, stdout events)",
    )


def configure_logging(level: str) -> None:
    """Set the root level; under systemd (``$JOURNAL_STREAM``) log with journald priorities
    and without our own timestamps (journald adds its own)."""
    root = logging.getLogger()
    root.setLevel(level)
    if os.environ.get("JOURNAL_STREAM"):
        fmt = _JournalFormatter("%(name)s: %(message)s")
        for handler in root.handlers:
            handler.setFormatter(fmt)


class _JournalFormatter(logging.Formatter):
    """Prefixes each line with ``<N>`` (sd-daemon(3) priority) so journald keeps the level."""

    PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self.PRIORITY.get(record.levelname, 6)}>{super().format(record)}"


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    configure_logging(args.log_level or cfg.logging.level)
    from edge_ser.daemon import Daemon  # loads onnxruntime: only for this command

    if cfg.source.type == "stdin":
        if sys.stdin is None:  # started with stdin closed (<&-)
            raise AudioError("source.type is stdin but stdin is closed")
        return Daemon(cfg, stdin=sys.stdin.buffer).run()
    return Daemon(cfg).run()
