"""Memory and thermal budgets: load shedding, throttle/pause/resume with hysteresis, duty cycle.

The thermal zone is a real file in a temp folder (the machine has no usable sensor); the
pipeline and model are real (the tiny contract model from tests/fixtures_models.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from edge_ser.audio import read_wav
from edge_ser.config import Config, ThermalBudget
from edge_ser.memory import MemoryGuard, limit_malloc_arenas, process_rss_mb, trim_heap
from edge_ser.model import OnnxModel
from edge_ser.pipeline import EmotionPipeline
from edge_ser.thermal import DutyCycle, SysfsSensor, ThermalController, ThermalState

VOICE_NOTE = Path(__file__).resolve().parent.parent / "examples" / "voice-note.wav"


class Rss:
    """A settable RSS reading in MiB."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


# --- memory --------------------------------------------------------------------------------

def test_memory_guard_sheds_and_logs_once_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    rss = Rss(100.0)
    guard = MemoryGuard(200.0, rss_fn=rss, check_every_s=0)
    assert guard.ok()
    rss.value = 250.0
    with caplog.at_level(logging.WARNING, logger="edge_ser.memory"):
        assert [guard.ok() for _ in range(5)] == [False] * 5
        rss.value = 150.0
        assert guard.ok()
        rss.value = 300.0
        assert not guard.ok()
    over = [r for r in caplog.records if "over the" in r.getMessage()]
    back = [r for r in caplog.records if "back under" in r.getMessage()]
    assert len(over) == 2 and len(back) == 1  # once per episode, not once per window
    assert guard.episodes == 2 and guard.shed == 6
    stats = guard.stats()
    assert stats["memory_over_budget"] is True and stats["rss_peak_mb"] == 300.0


def test_real_rss_reading_and_allocator_helpers() -> None:
    rss = process_rss_mb()
    assert 10 < rss < 20_000
    guard = MemoryGuard(rss / 4)  # a budget this process is certainly over
    assert not guard.ok() and guard.over
    assert MemoryGuard(rss * 10).ok()
    assert isinstance(limit_malloc_arenas(2), bool) and isinstance(trim_heap(), bool)


def test_pipeline_sheds_windows_above_the_memory_budget(tiny_model: Path) -> None:
    audio = read_wav(VOICE_NOTE)
    model = OnnxModel(tiny_model)
    rss = Rss(100.0)
    guard = MemoryGuard(200.0, rss_fn=rss, check_every_s=0)
    pipe = EmotionPipeline(Config(), model, gate=guard.ok)
    normal = pipe.process(audio) + pipe.flush()
    assert len(normal) == 3 and pipe.windows_skipped == 0
    rss.value = 500.0
    pipe.reset()
    shed = pipe.process(audio) + pipe.flush()
    assert shed == [] and pipe.windows_skipped == 3  # nothing run, everything counted
    rss.value = 150.0
    pipe.reset()
    assert len(pipe.process(audio) + pipe.flush()) == 3  # back to normal


# --- thermal -------------------------------------------------------------------------------

def _zone(tmp_path: Path, celsius: float) -> Path:
    zone = tmp_path / "thermal_zone0" / "temp"
    zone.parent.mkdir(exist_ok=True)
    zone.write_text(f"{int(celsius * 1000)}\n")
    return zone


def test_fake_zone_drives_throttle_pause_and_resume_with_hysteresis(tmp_path: Path) -> None:
    zone = _zone(tmp_path, 45.0)
    cfg = ThermalBudget(zone=zone, soft_c=70, hard_c=80, hysteresis_c=5, poll_s=0.001)
    ctl = ThermalController(cfg)
    seen: list[tuple[str, str]] = []
    ctl.listeners.append(lambda old, new: seen.append((old.value, new.value)))
    steps = [  # (temperature, expected state)
        (45, "normal"), (69.9, "normal"), (70, "throttled"), (67, "throttled"),
        (79, "throttled"), (80.5, "paused"), (76, "paused"), (74.9, "throttled"),
        (66, "throttled"), (64.9, "normal"), (90, "paused"), (60, "normal"),
    ]
    for temp, want in steps:
        _zone(tmp_path, temp)
        assert ctl.poll(force=True).value == want, temp
        assert ctl.temperature_c == pytest.approx(temp, abs=0.01)
    assert seen == [("normal", "throttled"), ("throttled", "paused"), ("paused", "throttled"),
                    ("throttled", "normal"), ("normal", "paused"), ("paused", "normal")]
    assert ctl.stats()["throttle"] == "normal" and ctl.transitions == 6


def test_throttled_runs_every_other_window_and_paused_none(tmp_path: Path) -> None:
    zone = _zone(tmp_path, 72)
    ctl = ThermalController(ThermalBudget(zone=zone))
    assert ctl.poll(force=True) is ThermalState.THROTTLED
    assert [ctl.allow_window() for _ in range(6)] == [True, False] * 3
    _zone(tmp_path, 85)
    assert ctl.poll(force=True) is ThermalState.PAUSED
    assert not any(ctl.allow_window() for _ in range(4))
    assert ctl.stats()["windows_shed_thermal"] == 7


def test_missing_or_garbled_zone_means_no_thermal_control(tmp_path: Path) -> None:
    ctl = ThermalController(ThermalBudget(zone=tmp_path / "absent"))
    assert ctl.poll(force=True) is ThermalState.NORMAL and ctl.temperature_c is None
    assert ctl.allow_window()
    bad = tmp_path / "bad"
    bad.write_text("hot\n")
    assert SysfsSensor(bad).read_c() is None
    bad.write_text("55\n")  # some drivers report whole degrees
    assert SysfsSensor(bad).read_c() == 55.0


def test_pipeline_gated_by_a_paused_zone(tiny_model: Path, tmp_path: Path) -> None:
    zone = _zone(tmp_path, 85)
    ctl = ThermalController(ThermalBudget(zone=zone))
    ctl.poll(force=True)
    pipe = EmotionPipeline(Config(), OnnxModel(tiny_model), gate=ctl.allow_window)
    assert pipe.process(read_wav(VOICE_NOTE)) + pipe.flush() == []
    assert pipe.windows_run == 0 and pipe.windows_skipped == 3


def test_duty_cycle_rest() -> None:
    duty = DutyCycle(0.25)
    assert duty.rest_after(0.1) == pytest.approx(0.3)  # busy 0.1 of 0.4 s = 25 %
    assert DutyCycle(1.0).rest_after(5.0) == 0.0
    with pytest.raises(ValueError):
        DutyCycle(0.0)
    assert np.isclose(duty.busy_s / (duty.busy_s + duty.rested_s), 0.25)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf"])
def test_a_zone_reading_that_is_not_a_temperature_is_unreadable(tmp_path: Path, text: str) -> None:
    zone = tmp_path / "temp"
    zone.write_text(f"{text}\n")
    assert SysfsSensor(zone).read_c() is None
