"""The capture queue: bounded, put never blocks, drops the oldest audio and counts it."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edge_ser.capture import Chunk, DropOldestQueue, QueueClosed, split_at_gaps


def _chunk(value: float, n: int = 160) -> np.ndarray:
    return np.full(n, value, dtype=np.float32)


def test_drops_oldest_and_counts() -> None:
    q = DropOldestQueue(capacity_s=0.05)  # 800 samples = five 160-sample chunks
    for i in range(8):
        q.put(_chunk(float(i)))
    assert q.dropped_chunks == 3
    assert q.dropped_samples == 3 * 160
    assert q.stats()["audio_dropped_s"] == pytest.approx(0.03)
    got = [float(c.audio[0]) for c in q.get_all(timeout=0)]
    assert got == [3.0, 4.0, 5.0, 6.0, 7.0]  # the newest survive, in order
    assert q.queued_s == 0.0


def test_dropping_is_logged_once_per_minute_not_per_chunk(
    caplog: pytest.LogCaptureFixture,
) -> None:
    q = DropOldestQueue(capacity_s=0.01)
    with caplog.at_level("WARNING", logger="edge_ser.capture"):
        for _ in range(50):
            q.put(_chunk(1.0))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["capture queue full (0.01 s of audio): the worker is behind, dropping "
                        "the oldest audio (0.01 s dropped so far)"]


def test_oversize_chunk_keeps_its_newest_part() -> None:
    q = DropOldestQueue(capacity_s=0.01)  # 160 samples
    q.put(np.arange(400, dtype=np.float32))
    (c,) = q.get_all(timeout=0)
    assert c.audio.size == 160 and c.audio[-1] == 399.0 and c.audio[0] == 240.0
    assert q.dropped_samples == 240


def test_put_never_blocks_when_full() -> None:
    q = DropOldestQueue(capacity_s=0.01)
    t0 = time.monotonic()
    for _ in range(1000):
        q.put(_chunk(1.0))
    assert time.monotonic() - t0 < 5.0  # a generous bound: no waiting on a consumer
    assert q.dropped_chunks == 999 and len(q) == 1


def test_put_wait_applies_back_pressure_without_loss() -> None:
    q = DropOldestQueue(capacity_s=0.02)  # two chunks
    total = 50
    received: list[float] = []

    def consume() -> None:
        while True:
            c = q.get(timeout=2)
            if c is None:
                return
            received.append(float(c.audio[0]))
            time.sleep(0.001)

    t = threading.Thread(target=consume)
    t.start()
    for i in range(total):
        assert q.put_wait(_chunk(float(i)), timeout=5)
    q.close()
    t.join(5)
    assert received == [float(i) for i in range(total)]
    assert q.dropped_chunks == 0


def test_close_wakes_consumer_and_refuses_put() -> None:
    q = DropOldestQueue(capacity_s=1)
    q.put(_chunk(1.0))
    q.close()
    assert not q.drained  # one chunk left
    assert q.get(timeout=0) is not None
    assert q.drained and q.get(timeout=0.01) is None
    with pytest.raises(QueueClosed):
        q.put(_chunk(2.0))


def test_thread_safe_accounting_under_contention() -> None:
    q = DropOldestQueue(capacity_s=0.1)
    producers, per_producer, n = 4, 500, 160
    got = 0
    stop = threading.Event()

    def produce() -> None:
        for _ in range(per_producer):
            q.put(_chunk(1.0, n))

    def consume() -> None:
        nonlocal got
        while not (stop.is_set() and q.drained):
            for c in q.get_all(timeout=0.05):
                got += c.audio.size

    consumer = threading.Thread(target=consume)
    consumer.start()
    threads = [threading.Thread(target=produce) for _ in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    q.close()
    stop.set()
    consumer.join(5)
    assert got + q.dropped_samples == producers * per_producer * n
    assert q.high_water <= q.capacity


def test_dropped_audio_is_a_gap_before_the_next_chunk() -> None:
    q = DropOldestQueue(capacity_s=0.1, rate=100)  # 10 samples
    for i in range(4):
        q.put(np.full(4, i, np.float32))  # 16 samples offered: chunks 0 and 1 are dropped
    got = q.get_all()
    assert [(int(c.audio[0]), c.gap) for c in got] == [(2, 8), (3, 0)]
    assert [(gap, len(run)) for gap, run in split_at_gaps(got)] == [(8, 2)]
    q.put(np.arange(25, dtype=np.float32))  # oversize: its oldest 15 samples are cut
    (chunk,) = q.get_all()
    assert chunk.gap == 15 and chunk.audio[0] == 15
    one = np.zeros(1, np.float32)
    runs = split_at_gaps([Chunk(one, 0.0), Chunk(one, 0.0, gap=3), Chunk(one, 0.0)])
    assert [(gap, len(run)) for gap, run in runs] == [(0, 1), (3, 2)]
