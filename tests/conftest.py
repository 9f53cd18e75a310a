"""Shared fixtures. Owner-specific fixtures live in tests/fixtures_*.py (registered below)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_ser.config import Config

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
SHARED_DATA = Path(
    __import__("os").environ.get("EDGE_SER_DATA", str(REPO.parent / "shared" / "data"))
)
SHIPPED_MODEL = REPO / "models" / "edge-ser-whisper-tiny.int8.onnx"

pytest_plugins = ["tests.fixtures_models", "tests.fixtures_broker"]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The full corpora (../shared/data); skips the test where a user's clone lacks them."""
    if not (SHARED_DATA / "ravdess" / "manifest.csv").is_file():
        pytest.skip(f"needs the corpora at {SHARED_DATA} (../shared/data; present in CI only)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def examples() -> Path:
    return EXAMPLES


def roomy(cfg: Config) -> Config:
    """For daemons run inside the pytest process: lift the RSS budget out of the way.

    By the time these tests run, pytest itself may hold torch and onnx from other test files and
    exceed the default 400 MiB budget, and the daemon would (rightly) shed every window. The
    memory budget has its own tests (tests/test_budgets.py).
    """
    cfg.budgets.memory.rss_mb = 1_000_000.0
    return cfg
