"""User-facing errors: each carries one line that names the cause (file, key, line)."""

from __future__ import annotations


class EdgeSerError(Exception):
    """Base class; ``str(err)`` is a single line fit for a log or a terminal."""

    def __str__(self) -> str:
        text = super().__str__()
        return " ".join(text.split())  # never more than one line


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
