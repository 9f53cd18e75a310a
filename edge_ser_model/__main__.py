"""``python -m edge_ser_model`` = ``edge-ser-model``."""

from __future__ import annotations

import sys

from edge_ser_model.cli import main

sys.exit(main())
