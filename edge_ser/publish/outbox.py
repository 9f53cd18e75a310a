"""``Outbox``: the bounded, ordered buffer of events on their way to the broker.

An event is *pending* until it is handed to the MQTT client, then *in flight* until the broker
acknowledges it (``on_publish`` for its message id; PUBACK for QoS 1). An event that was in
flight when the connection dropped stays in flight: paho re-sends it after the reconnect, and
the outbox forgets it only once the acknowledgement arrives. Pending plus in-flight events are
bounded by ``capacity``; when full, the oldest *pending* event is dropped and counted (events
already handed to the client cannot be recalled, so a new event is dropped instead if nothing
is pending). Thread-safe.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    """One buffered event: ``seq`` numbers events in the order they were produced."""

    seq: int
    topic: str
    payload: bytes
    qos: int


class Outbox:
    """Pending (FIFO) and in-flight (by message id) events, bounded by ``capacity``."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("outbox capacity must be at least 1")
        self.capacity = capacity
        self._lock = threading.Lock()
        self._pending: deque[Message] = deque()
        self._inflight: dict[int, Message] = {}
        self._early: set[int] = set()  # acks that arrived while a hand-over was in progress
        self._sending = False
        self._seq = 0
        self._dropped = 0

    def put(self, topic: str, payload: bytes, qos: int) -> Message | None:
        """Append an event; returns the event dropped to make room, if any."""
        with self._lock:
            self._seq += 1
            msg = Message(self._seq, topic, payload, qos)
            victim: Message | None = None
            if len(self._pending) + len(self._inflight) >= self.capacity:
                victim = self._pending.popleft() if self._pending else msg
                self._dropped += 1
            if victim is not msg:
                self._pending.append(msg)
        if victim is not None:
            log.debug("outbox full (%d): dropped event #%d", self.capacity, victim.seq)
        return victim

    def take(self) -> Message | None:
        """Remove the oldest pending event to hand it to the client; follow with
        :meth:`sent` or :meth:`give_back`. Only one hand-over at a time."""
        with self._lock:
            if not self._pending:
                return None
            self._sending = True
            self._early.clear()
            return self._pending.popleft()

    def sent(self, mid: int, msg: Message) -> None:
        """The client accepted ``msg`` as message id ``mid``: in flight until :meth:`acked`."""
        with self._lock:
            self._sending = False
            if mid not in self._early:
                self._inflight[mid] = msg
            self._early.clear()

    def give_back(self, msg: Message) -> None:
        """The client did not take ``msg``: it goes back to the head of the queue."""
        with self._lock:
            self._sending = False
            self._early.clear()
            self._pending.appendleft(msg)

    def discard(self, msg: Message) -> None:
        """The client refused ``msg`` for good (e.g. too large): drop it and count it."""
        with self._lock:
            self._sending = False
            self._early.clear()
            self._dropped += 1

    def acked(self, mid: int) -> Message | None:
        """The broker acknowledged message id ``mid``; returns the event if it was ours."""
        with self._lock:
            msg = self._inflight.pop(mid, None)
            if msg is None and self._sending:
                self._early.add(mid)  # may be the event being handed over right now
            return msg

    def forget_qos0(self) -> int:
        """Drop in-flight QoS 0 events (paho does not re-send them after a reconnect)."""
        with self._lock:
            gone = [mid for mid, m in self._inflight.items() if m.qos == 0]
            for mid in gone:
                del self._inflight[mid]
            return len(gone)

    def clear(self) -> int:
        """Forget everything (after the client was torn down); returns how many were lost."""
        with self._lock:
            lost = len(self._pending) + len(self._inflight)
            self._pending.clear()
            self._inflight.clear()
            return lost

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def dropped(self) -> int:
        return self._dropped

    def size_now(self) -> int:
        """Pending plus in flight without taking the lock, for a signal handler (the thread it
        interrupted may hold it); may be one short while an event is being handed over."""
        return len(self._pending) + len(self._inflight)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._inflight)
