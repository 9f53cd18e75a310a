"""edge-ser model kit: encoders, training, evaluation and export (``edge-ser-model``).

Never imported by the runtime package :mod:`edge_ser`; needs the ``train`` extra (torch).
"""

from __future__ import annotations
