"""Figures with units: the only way numbers enter a report."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

Quantity = dict[str, Any]


def q(value: float | int | None, unit: str, digits: int = 4) -> Quantity:
    """One figure: ``{"value": v, "unit": u}`` (``None`` = not measured; NaN becomes ``None``)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return {"value": None, "unit": unit}
    if isinstance(value, bool):
        raise TypeError("a bool is not a figure")
    if isinstance(value, int):
        return {"value": value, "unit": unit}
    return {"value": round(float(value), digits), "unit": unit}


def series(values: Iterable[float | None], unit: str, digits: int = 4) -> Quantity:
    """A time series or sample set: ``{"values": [...], "unit": u}``."""
    out: list[float | None] = []
    for v in values:
        out.append(None if v is None or not math.isfinite(v) else round(float(v), digits))
    return {"values": out, "unit": unit}


def val(fig: Any) -> float | None:
    """The number inside a figure (or ``None`` when absent / not measured)."""
    if isinstance(fig, dict) and "value" in fig:
        v = fig["value"]
        if isinstance(v, bool) or not isinstance(v, (int, float)):  # a hand-edited report
            return None
        return float(v) if math.isfinite(v) else None
    return None


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (``pct`` in 0-100) of a non-empty sample."""
    if not values:
        return math.nan
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * pct / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def fmt(fig: Any, digits: int = 1) -> str:
    """``"12.3 ms"`` for a figure; ``"n/a"`` when missing."""
    v = val(fig)
    if v is None:
        return "n/a"
    unit = fig.get("unit", "") if isinstance(fig, dict) else ""
    if unit == "count":
        text = f"{v:.0f}"
    elif unit == "s/s":
        text = f"{v:.3g}"
    elif abs(v) >= 100:
        text = f"{v:.0f}"
    elif unit in ("x", "fraction"):
        text = f"{v:.{max(digits, 2)}f}"
    elif abs(v) >= 100 or digits == 0:
        text = f"{v:.0f}"
    else:
        text = f"{v:.{digits}f}"
    return f"{text} {unit}".strip() if unit not in ("count", "") else text
