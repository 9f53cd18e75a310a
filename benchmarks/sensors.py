"""CPU temperature, frequency and Raspberry Pi throttle flags: /sys, and ``vcgencmd`` for the flags.

:class:`SysfsSensors` reads the real files under configurable roots (tests point them at a
temporary tree or at a directory that does not exist); :class:`NoSensors` reads nothing. Pick
one with :func:`make_sensors`. A quantity a machine has no sensor for is ``None`` and the report
says "no sensor": a number is never invented.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

THERMAL_ROOT = Path("/sys/class/thermal")
CPU_ROOT = Path("/sys/devices/system/cpu")
PI_THROTTLE_FILE = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")
#: Raspberry Pi ``get_throttled`` bits that mean "slowed down now": ARM frequency capped (1),
#: currently throttled (2), soft temperature limit active (3). Bit 0 is under-voltage now.
THROTTLE_NOW_MASK = 0b1110
UNDERVOLT_NOW_MASK = 0b0001
_PREFERRED_ZONES = ("cpu", "soc", "x86_pkg", "k10temp", "package", "acpitz")


@dataclass
class SensorSample:
    temp_c: float | None = None
    freq_mhz: list[float] = field(default_factory=list)
    throttle_flags: int | None = None


class Sensors(Protocol):
    def describe(self) -> dict[str, str]:
        """Where each quantity comes from, or ``"no sensor"``."""
        ...

    def read(self) -> SensorSample:
        """One reading of every sensor this machine has."""
        ...

    def max_freq_mhz(self) -> float | None:
        """The highest sustained frequency the CPUs are rated for (``base_frequency`` where
        the driver gives one, else ``cpuinfo_max_freq``), if known."""
        ...


def _read_number(path: Path) -> float | None:
    try:
        return float(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


class SysfsSensors:
    """The real sensors: /sys/class/thermal, cpufreq, and the Pi firmware's throttle flags."""

    def __init__(
        self,
        thermal_root: Path = THERMAL_ROOT,
        cpu_root: Path = CPU_ROOT,
        throttle_file: Path = PI_THROTTLE_FILE,
        vcgencmd: str | None = None,
    ) -> None:
        self.zone = self._pick_zone(thermal_root)
        self.freq_files = sorted(
            cpu_root.glob("cpu[0-9]*/cpufreq/scaling_cur_freq"),
            key=lambda p: int(p.parent.parent.name[3:]),
        )
        # the sustained rating: intel_pstate's base_frequency where it exists (cpuinfo_max_freq
        # is the single-core turbo there, which all cores under load never hold), else the max
        self.max_files = [p.with_name("base_frequency")
                          if p.with_name("base_frequency").is_file()
                          else p.with_name("cpuinfo_max_freq") for p in self.freq_files]
        self.throttle_file = throttle_file if throttle_file.is_file() else None
        # the documented order: ``vcgencmd get_throttled`` when present, the sysfs node otherwise;
        # "" turns the lookup off (tests with a fake tree)
        self.vcgencmd = shutil.which("vcgencmd") if vcgencmd is None else (vcgencmd or None)

    @staticmethod
    def _pick_zone(root: Path) -> Path | None:
        zones = sorted(p for p in root.glob("thermal_zone*") if (p / "temp").is_file())
        if not zones:
            return None
        for want in _PREFERRED_ZONES:
            for z in zones:
                try:
                    kind = (z / "type").read_text(encoding="utf-8").strip().lower()
                except OSError:
                    kind = ""
                if want in kind:
                    return z
        return zones[0]

    def describe(self) -> dict[str, str]:
        zone_type = "?"
        if self.zone is not None:
            try:
                zone_type = (self.zone / "type").read_text(encoding="utf-8").strip()
            except OSError:
                pass
        if self.vcgencmd:
            throttle = f"{self.vcgencmd} get_throttled"
        elif self.throttle_file is not None:
            throttle = str(self.throttle_file)
        else:
            throttle = "no sensor"
        return {
            "temperature": f"{self.zone}/temp ({zone_type})" if self.zone else "no sensor",
            "frequency": (f"{len(self.freq_files)} x cpufreq/scaling_cur_freq"
                          if self.freq_files else "no sensor"),
            "throttle": throttle,
        }

    def max_freq_mhz(self) -> float | None:
        values = [v for v in (_read_number(p) for p in self.max_files) if v is not None]
        return max(values) / 1000.0 if values else None

    def _throttle(self) -> int | None:
        if self.vcgencmd:
            try:
                out = subprocess.run(
                    [self.vcgencmd, "get_throttled"], capture_output=True, text=True,
                    timeout=2, check=False,
                ).stdout
                return int(out.strip().partition("=")[2], 16)
            except (OSError, ValueError, subprocess.SubprocessError):
                return None
        if self.throttle_file is not None:
            try:
                return int(self.throttle_file.read_text(encoding="utf-8").strip(), 16)
            except (OSError, ValueError):
                return None
        return None

    def read(self) -> SensorSample:
        temp = _read_number(self.zone / "temp") if self.zone is not None else None
        freqs = [v / 1000.0 for v in (_read_number(p) for p in self.freq_files) if v is not None]
        return SensorSample(
            temp_c=None if temp is None else temp / 1000.0,
            freq_mhz=freqs,
            throttle_flags=self._throttle(),
        )


class NoSensors:
    """A machine (or a run) with no sensors at all: every reading is "no sensor"."""

    def describe(self) -> dict[str, str]:
        return {"temperature": "no sensor", "frequency": "no sensor", "throttle": "no sensor"}

    def read(self) -> SensorSample:
        return SensorSample()

    def max_freq_mhz(self) -> float | None:
        return None


def make_sensors(
    thermal_root: Path | None = THERMAL_ROOT, cpu_root: Path = CPU_ROOT,
    throttle_file: Path = PI_THROTTLE_FILE,
) -> Sensors:
    """The sysfs sensors under the given roots; ``thermal_root=None`` disables sensing.
    ``vcgencmd`` is looked for only when the roots are the real ones (a fake tree stays fake)."""
    if thermal_root is None:
        return NoSensors()
    real = thermal_root == THERMAL_ROOT and throttle_file == PI_THROTTLE_FILE
    return SysfsSensors(thermal_root, cpu_root, throttle_file, vcgencmd=None if real else "")
