"""benchmarks.soak: the verdict on made-up series, and a short real soak (daemon + mosquitto)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.broker import mosquitto_missing
from benchmarks.soak import FLAT_MIB, Sample, render, soak, summarize


def _series(rss: list[float], fds: list[int] | None = None,
            threads: list[int] | None = None) -> list[Sample]:
    n = len(rss)
    return [Sample(t=float(i + 1), rss_mib=r, uss_mib=r - 10.0,
                   fds=(fds or [10] * n)[i], threads=(threads or [7] * n)[i],
                   audio_s=600.0 * (i + 1)) for i, r in enumerate(rss)]


def test_flat_memory_is_flat() -> None:
    s = summarize(_series([120.0, 129.0] + [130.0, 131.0] * 9), wall_s=20.0)
    assert s["verdict"] == "flat", s
    assert s["rss_warm"]["value"] in (130.0, 130.5, 131.0)
    assert s["audio_processed"] == {"value": round(20 * 600 / 3600, 2), "unit": "h"}


def test_a_leak_is_growing_and_says_by_how_much() -> None:
    rss = [130.0 + 1.0 * i for i in range(20)]  # 1 MiB per sample
    s = summarize(_series(rss), wall_s=20.0)
    assert s["verdict"] == "growing"
    assert "RSS grew by" in s["reason"]
    assert s["rss_growth"]["value"] > FLAT_MIB


def test_added_file_descriptors_or_threads_are_growing() -> None:
    fds = [10] * 10 + [11] * 10
    s = summarize(_series([130.0] * 20, fds=fds), wall_s=20.0)
    assert s["verdict"] == "growing" and "1 more open file descriptors" in s["reason"]
    s = summarize(_series([130.0] * 20, threads=[7] * 10 + [9] * 10), wall_s=20.0)
    assert s["verdict"] == "growing" and "2 more threads" in s["reason"]


def test_a_passing_spike_of_threads_is_not_a_leak() -> None:
    s = summarize(_series([130.0] * 20, threads=[7] * 19 + [9]), wall_s=20.0)
    assert s["verdict"] == "flat", s


def test_level_memory_without_audio_processed_is_unknown() -> None:
    samples = _series([130.0] * 20)
    for x in samples:
        x.audio_s = 600.0  # the stats never moved: nothing went through the pipeline
    s = summarize(samples, wall_s=20.0)
    assert s["verdict"] == "unknown" and "no audio" in s["reason"]


def test_growth_is_also_given_as_rates_over_a_long_enough_run() -> None:
    rss = [130.0 + 0.5 * i for i in range(20)]
    samples = _series(rss)
    for x in samples:
        x.t *= 60.0  # a sample a minute: 20 minutes
    s = summarize(samples, wall_s=1200.0)
    # warm median t=5 min, end median t=19 min: 7 MiB over 14 min and 14 x 600 s of audio
    assert s["rss_growth"]["value"] == 7.0
    assert s["rss_growth_per_wall_hour"]["value"] == round(7.0 / 14 * 60, 1)
    assert s["rss_growth_per_audio_day"]["value"] == round(7.0 / (14 * 600) * 86400, 2)
    short = summarize(_series(rss), wall_s=20.0)  # 14 s apart: a rate would extrapolate noise
    assert short["rss_growth"]["value"] == 7.0
    assert short["rss_growth_per_wall_hour"]["value"] is None


def test_too_few_samples_is_unknown_not_flat() -> None:
    s = summarize(_series([130.0]), wall_s=20.0)
    assert s["verdict"] == "unknown" and "too few samples" in s["reason"]


@pytest.mark.broker
def test_a_short_real_soak(tmp_path: Path) -> None:
    missing = mosquitto_missing()
    if missing:
        pytest.skip(missing)
    r = soak(duration_s=12.0, every_s=0.5, out=tmp_path)  # start-up takes 1-3 s of it
    assert r["status"] == "ok", r.get("reason")
    assert r["daemon_exit_code"] == 0
    assert r["events_received"]["value"] > 0  # real events through a real broker
    assert r["verdict"] in ("flat", "growing")  # judged, whatever this machine did
    assert r["audio_processed"]["value"] > 0
    on_disk = json.loads((tmp_path / "soak.json").read_text())
    assert on_disk["samples"] and on_disk["verdict"] == r["verdict"]
    md = (tmp_path / "soak.md").read_text()
    assert md == render(r) and "| verdict |" in md
