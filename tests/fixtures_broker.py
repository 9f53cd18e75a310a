"""Fixtures (filled in by their owner)."""
