"""Window cutting arithmetic on real speech: lengths, hop, trailing pieces, stream times."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_ser import SAMPLE_RATE
from edge_ser.audio import read_wav
from edge_ser.config import WindowConfig
from edge_ser.windows import Window, Windower


@pytest.fixture(scope="module")
def speech(examples: Path) -> np.ndarray:
    """About 40 s of real speech (the bundled clips, end to end)."""
    clips = sorted((examples / "clips").glob("*.wav"))
    x = np.concatenate([read_wav(p) for p in clips] * 2)
    assert len(x) > 40 * SAMPLE_RATE
    return x


def _cut(x: np.ndarray, start_s: float = 0.0, **kw: float) -> list[Window]:
    w = Windower(WindowConfig.model_validate(kw))
    return w.push(x, start_s) + w.end_utterance()


def _secs(ws: list[Window]) -> list[tuple[float, float, float]]:
    return [(round(w.start_s, 4), round(w.end_s, 4), round(w.speech_s, 4)) for w in ws]


def test_short_speech_gives_one_short_window(speech: np.ndarray) -> None:
    x = speech[: int(3.2 * SAMPLE_RATE)]
    (w,) = _cut(x, start_s=5.0)
    assert _secs([w]) == [(5.0, 8.2, 3.2)]
    np.testing.assert_array_equal(w.audio, x)


def test_very_short_only_window_is_kept_despite_min_s(speech: np.ndarray) -> None:
    assert _secs(_cut(speech[: SAMPLE_RATE // 2], min_s=1.0)) == [(0.0, 0.5, 0.5)]


def test_long_speech_splits_with_hop_equal_length(speech: np.ndarray) -> None:
    ws = _cut(speech[: 20 * SAMPLE_RATE])
    assert _secs(ws) == [(0.0, 8.0, 8.0), (8.0, 16.0, 8.0), (16.0, 20.0, 4.0)]
    np.testing.assert_array_equal(ws[1].audio, speech[8 * SAMPLE_RATE : 16 * SAMPLE_RATE])


def test_trailing_piece_shorter_than_min_s_is_dropped(speech: np.ndarray) -> None:
    ws = _cut(speech[: int(16.5 * SAMPLE_RATE)], min_s=1.0)
    assert _secs(ws) == [(0.0, 8.0, 8.0), (8.0, 16.0, 8.0)]
    ws = _cut(speech[: int(16.5 * SAMPLE_RATE)], min_s=0.5)
    assert _secs(ws)[-1] == (16.0, 16.5, 0.5)


def test_overlapping_hop(speech: np.ndarray) -> None:
    ws = _cut(speech[: 20 * SAMPLE_RATE], hop_s=4.0)
    assert [w.start_s for w in ws] == [0.0, 4.0, 8.0, 12.0]  # 12-20 covers the end: no tail
    ws = _cut(speech[: 21 * SAMPLE_RATE], hop_s=4.0)
    assert _secs(ws)[-1] == (16.0, 21.0, 5.0)  # 1 s not yet covered -> tail from the next hop
    ws = _cut(speech[: int(20.5 * SAMPLE_RATE)], hop_s=4.0)
    assert len(ws) == 4  # only 0.5 s uncovered (< min_s)


def test_windows_spanning_gaps_keep_stream_times(speech: np.ndarray) -> None:
    w = Windower(WindowConfig.model_validate({}))
    sr = SAMPLE_RATE
    out = w.push(speech[: 2 * sr], 1.0)
    out += w.push(speech[2 * sr : 5 * sr], 10.0)
    out += w.push(speech[5 * sr : 10 * sr], 20.0)
    out += w.end_utterance()
    assert _secs(out) == [(1.0, 23.0, 8.0), (23.0, 25.0, 2.0)]
    np.testing.assert_array_equal(out[0].audio, speech[: 8 * sr])


def test_contiguous_blocks_in_any_chunking_equal_one_push(speech: np.ndarray) -> None:
    x = speech[: 30 * SAMPLE_RATE]
    rng = np.random.default_rng(0)
    cfg = WindowConfig.model_validate({"hop_s": 3.0})
    w = Windower(cfg)
    out: list[Window] = []
    i = 0
    while i < len(x):
        n = int(rng.integers(1, 20000))
        out += w.push(x[i : i + n], 2.0 + i / SAMPLE_RATE)
        i += n
    out += w.end_utterance()
    ref = _cut(x, start_s=2.0, hop_s=3.0)
    assert _secs(out) == _secs(ref)
    for a, b in zip(out, ref, strict=True):
        np.testing.assert_array_equal(a.audio, b.audio)


def test_end_utterance_and_reset_clear_state(speech: np.ndarray) -> None:
    w = Windower(WindowConfig.model_validate({}))
    w.push(speech[: 3 * SAMPLE_RATE], 0.0)
    w.reset()
    assert w.buffered_s == 0.0 and w.end_utterance() == []
    w.push(speech[: 3 * SAMPLE_RATE], 100.0)
    (first,) = w.end_utterance()
    (second,) = w.push(speech[: 8 * SAMPLE_RATE], 200.0)
    assert (first.start_s, second.start_s) == (100.0, 200.0)
    assert w.end_utterance() == []  # nothing uncovered after an exact 8 s
