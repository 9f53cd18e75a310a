"""``python -m benchmarks``: the whole suite (same as ``edge-ser bench``)."""

from __future__ import annotations

from benchmarks.suite import main

raise SystemExit(main())
