"""edge-ser model kit: encoders, training, evaluation and export (``edge-ser-model``).

Never imported by the runtime package :mod:`edge_ser`; needs the ``train`` extra (torch).
"""

from __future__ import annotations

import edge_ser  # noqa: F401  (turns onnxruntime's telemetry off before a module here loads it)

#: weight of the voice branch in the compact model's log-linear mix (measured best,
#: docs/training.md); here so that the CLI can show it without importing torch
VOICE_WEIGHT = 0.2
