"""User-facing errors: each carries one line that names the cause (file, key, line)."""

from __future__ import annotations

import os
import stat


class EdgeSerError(Exception):
    """Base class; ``str(err)`` is a single line fit for a log or a terminal."""

    def __str__(self) -> str:
        text = super().__str__()
        return printable(" ".join(text.split()))  # never more than one line


def printable(text: str) -> str:
    """``text`` with what a terminal would act on, not show (an escape sequence in a model's
    metadata, a file name with a bell in it), written as ``\\x1b``-style escapes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escaped(c) for c in text)


def _escaped(c: str) -> str:
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else (
        f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")


class ConfigError(EdgeSerError):
    """A configuration file or value is wrong."""


class AudioError(EdgeSerError):
    """Audio could not be read, decoded or captured."""


class ModelError(EdgeSerError):
    """A model file is missing, unreadable or breaks the model contract."""


class PublishError(EdgeSerError):
    """The event sink (MQTT broker) refused us or is misconfigured."""


class OutputClosed(EdgeSerError):
    """The reader of stdout went away (``| head``): the command stops quietly with 141."""


def not_a_file(path: str | os.PathLike[str]) -> str:
    """Why ``path``, which is not a regular file, cannot be read as one: what it is instead
    (a named pipe given to ``classify`` read 'no such file' before), or 'no such file'."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "no such file"
    if stat.S_ISFIFO(mode):
        return ("is a named pipe (FIFO), not a file: a WAV file is read with seeks; save the "
                "stream to a file first, or send raw PCM to `edge-ser run` (source.type: stdin)")
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    kinds = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"))
    what = next((name for test, name in kinds if test(mode)), "not a regular file")
    return f"is {what}, not a file" if what != "not a regular file" else what
