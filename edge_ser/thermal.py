"""Thermal budget: normal -> throttled (above soft) -> paused (above hard), with hysteresis.

The temperature comes from a :class:`TemperatureSensor`; :class:`SysfsSensor` reads a Linux
thermal zone file (millidegrees Celsius, path configurable so tests use a fake zone). Throttled
means fewer onnxruntime threads and only every other window analysed (the effective hop doubles);
paused means no inference at all. A state is left only once the temperature is ``hysteresis_c``
below the limit that caused it. :class:`DutyCycle` caps the share of time spent in inference.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from edge_ser.config import ThermalBudget

log = logging.getLogger(__name__)


class TemperatureSensor(Protocol):
    def read_c(self) -> float | None:
        """Temperature in degrees Celsius, or None when unavailable."""


class SysfsSensor:
    """A ``/sys/class/thermal/thermal_zone*/temp`` file (integer millidegrees Celsius)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._warned = False

    def read_c(self) -> float | None:
        try:
            text = self.path.read_text(encoding="ascii").strip()
            value = float(text)
            if not math.isfinite(value):
                raise ValueError(f"not a temperature: {text!r}")
        except (OSError, ValueError) as exc:
            if not self._warned:
                self._warned = True
                log.warning("thermal zone %s unreadable (%s): no thermal control", self.path,
                            getattr(exc, "strerror", None) or exc)
            return None
        if self._warned:
            self._warned = False
            log.warning("thermal zone %s readable again", self.path)
        return value / 1000.0 if abs(value) > 200 else value  # some zones report degrees


class ThermalState(str, enum.Enum):
    NORMAL = "normal"
    THROTTLED = "throttled"
    PAUSED = "paused"


StateListener = Callable[[ThermalState, ThermalState], None]


class ThermalController:
    """Polls the sensor (at most every ``poll_s``) and decides what inference may do."""

    def __init__(
        self,
        cfg: ThermalBudget,
        sensor: TemperatureSensor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.sensor: TemperatureSensor = sensor or SysfsSensor(cfg.zone)
        self._clock = clock
        self._polled = -float("inf")
        self.state = ThermalState.NORMAL
        self.temperature_c: float | None = None
        self.transitions = 0
        self.skipped = 0  # windows refused for heat
        self._tick = 0
        self.listeners: list[StateListener] = []

    def update(self, temp_c: float | None) -> ThermalState:
        """Apply one reading (None = unknown: keep the state)."""
        self.temperature_c = temp_c
        if temp_c is None:
            return self.state
        c = self.cfg
        new = self.state
        if temp_c >= c.hard_c:
            new = ThermalState.PAUSED
        elif self.state is ThermalState.PAUSED:
            if temp_c < c.soft_c - c.hysteresis_c:
                new = ThermalState.NORMAL
            elif temp_c < c.hard_c - c.hysteresis_c:
                new = ThermalState.THROTTLED
        elif temp_c >= c.soft_c:
            new = ThermalState.THROTTLED
        elif self.state is ThermalState.THROTTLED and temp_c < c.soft_c - c.hysteresis_c:
            new = ThermalState.NORMAL
        if new is not self.state:
            old, self.state = self.state, new
            self.transitions += 1
            log.warning("thermal: %.1f C, %s -> %s", temp_c, old.value, new.value)
            for listener in self.listeners:
                listener(old, new)
        return self.state

    def poll(self, force: bool = False) -> ThermalState:
        now = self._clock()
        if force or now - self._polled >= self.cfg.poll_s:
            self._polled = now
            self.update(self.sensor.read_c())
        return self.state

    def allow_window(self) -> bool:
        """Normal: yes; throttled: every other window; paused: no (uses the last poll)."""
        state = self.state
        if state is ThermalState.NORMAL:
            return True
        if state is ThermalState.THROTTLED:
            self._tick += 1
            if self._tick % 2 == 1:
                return True
        self.skipped += 1
        return False

    def stats(self) -> dict[str, float | int | str | None]:
        temp = self.temperature_c
        return {
            "temperature_c": None if temp is None else round(temp, 1),
            "throttle": self.state.value,
            "throttle_transitions": self.transitions,
            "windows_shed_thermal": self.skipped,
        }


class DutyCycle:
    """Keeps inference at most ``fraction`` of wall time by resting after each busy spell."""

    def __init__(self, fraction: float) -> None:
        if not 0 < fraction <= 1:
            raise ValueError("duty cycle must be in (0, 1]")
        self.fraction = fraction
        self.busy_s = 0.0
        self.rested_s = 0.0

    def rest_after(self, busy_s: float) -> float:
        """Seconds to rest after ``busy_s`` seconds of work (0 when the fraction is 1)."""
        self.busy_s += busy_s
        rest = busy_s * (1.0 - self.fraction) / self.fraction
        self.rested_s += rest
        return rest
