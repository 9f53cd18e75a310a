"""``StdoutSink``: events as JSON lines on a text stream (the default when no broker is set).

Each line is one payload with a ``type`` key first: ``"emotion"``, ``"state"`` or ``"stats"``,
e.g. ``{"type":"emotion","emotion":"anger","confidence":0.81,...}``. Filter with
``jq 'select(.type=="emotion")'``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TextIO

from edge_ser.errors import OutputClosed, PublishError
from edge_ser.publish.sink import to_json

log = logging.getLogger(__name__)


class StdoutSink:
    """Writes one JSON object per line; thread-safe; never buffers or drops."""

    def __init__(self, stream: TextIO, model_name: str = "") -> None:
        self._stream = stream
        self._model_name = model_name
        self._lock = threading.Lock()
        self._stopped = False
        self._reader_gone = False  # a closed pipe: later writes are dropped quietly

    def start(self, wait_s: float = 0.0, cancel: Callable[[], bool] | None = None) -> None:
        log.debug("stdout sink ready")

    def wait_connected(self, timeout: float, cancel: Callable[[], bool] | None = None) -> bool:
        return True

    def publish_event(self, event: dict[str, Any]) -> None:
        payload = dict(event)
        if self._model_name:
            payload.setdefault("model", self._model_name)
        self._write("emotion", payload)

    def publish_state(self, state: dict[str, Any]) -> None:
        self._write("state", state)

    def publish_stats(self, stats: dict[str, Any]) -> None:
        self._write("stats", stats)

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            try:
                self._stream.flush()
            except (OSError, ValueError):
                pass

    @property
    def dropped(self) -> int:
        return 0

    @property
    def connected(self) -> bool:
        return True

    undelivered = 0  # every event is written at once
    failure: str | None = None
    def _write(self, kind: str, payload: dict[str, Any]) -> None:
        body = {k: v for k, v in payload.items() if k != "type"}
        line = to_json({"type": kind, **body})
        with self._lock:
            if self._reader_gone:
                return
            try:
                write_line(self._stream, line, "events")
            except OutputClosed:
                self._reader_gone = True
                raise


def write_line(stream: TextIO, line: str, what: str) -> None:
    """``line`` and a newline, flushed. OutputClosed when the reader has gone (``| head``);
    PublishError naming ``what`` for a full disk or a closed file."""
    try:
        stream.write(line + "\n")
        stream.flush()
    except BrokenPipeError as exc:  # `| head`: the reader has what it wanted
        raise OutputClosed("stdout: its reader has gone") from exc
    except (OSError, ValueError) as exc:  # a full disk, a closed file
        reason = getattr(exc, "strerror", None) or exc
        raise PublishError(f"cannot write {what} to stdout ({reason})") from exc
