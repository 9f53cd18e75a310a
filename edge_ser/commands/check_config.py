"""Placeholder: implemented by its owner (see docs/DESIGN.md)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No arguments yet."""


def run(args: argparse.Namespace) -> int:
    raise SystemExit("not implemented yet")
