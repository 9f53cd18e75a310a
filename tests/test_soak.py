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
    s = summarize(_series([130.0] * 20, threads=[7] * 19 + [9]), wall_s=20.0)
    assert s["verdict"] == "growing" and "2 more threads" in s["reason"]


def test_too_few_samples_is_unknown_not_flat() -> None:
    s = summarize(_series([130.0]), wall_s=20.0)
    assert s["verdict"] == "unknown" and "too few samples" in s["reason"]


@pytest.mark.skipif(mosquitto_missing() is not None, reason=str(mosquitto_missing()))
def test_a_short_real_soak(tmp_path: Path) -> None:
    r = soak(duration_s=8.0, every_s=0.5, out=tmp_path)
    assert r["status"] == "ok", r.get("reason")
    assert r["daemon_exit_code"] == 0
    assert r["events_received"]["value"] > 0  # real events through a real broker
    assert r["verdict"] in ("flat", "growing")  # judged, whatever this machine did
    assert r["audio_processed"]["value"] > 0
    on_disk = json.loads((tmp_path / "soak.json").read_text())
    assert on_disk["samples"] and on_disk["verdict"] == r["verdict"]
    md = (tmp_path / "soak.md").read_text()
    assert md == render(r) and "| verdict |" in md
