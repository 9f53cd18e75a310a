"""The MQTT publisher thread: buffered events and the newest state, handed to paho in order.

It publishes only while the connection is *ready* (the broker acknowledged this connection's
``online``; by then paho has re-sent what was in flight when the last connection dropped), and
keeps at most ``inflight_cap`` events handed to paho and not yet acknowledged.
"""

from __future__ import annotations

import logging
import threading
import time

from paho.mqtt.enums import MQTTErrorCode

from edge_ser.publish.client import RecordingClient
from edge_ser.publish.outbox import Message, Outbox

log = logging.getLogger(__name__)


class Pump:
    """Owns the publisher thread; shares ``cond`` (and its lock) with the sink's callbacks."""

    def __init__(self, client: RecordingClient, outbox: Outbox, state_topic: str,
                 inflight_cap: int, cond: threading.Condition) -> None:
        self._client = client
        self._outbox = outbox
        self._state_topic = state_topic
        self._inflight_cap = inflight_cap
        self._cond = cond
        self.ready = False  # set under ``cond`` by the sink when "online" is acknowledged
        self._closed = False
        self._state: bytes | None = None  # latest state not yet handed to paho
        self._thread = threading.Thread(target=self._run, name="edge-ser-mqtt", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put_state(self, data: bytes) -> None:
        """Keep ``data`` as the state to publish next (only the newest state matters)."""
        with self._cond:
            self._state = data
            self._cond.notify_all()

    def set_ready(self, ready: bool) -> None:
        """Call with ``cond`` held."""
        self.ready = ready
        self._cond.notify_all()

    def close(self, timeout_s: float = 2.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)

    def _has_work(self) -> bool:
        """Events while the in-flight cap allows; the state once no event is waiting (so it
        follows the events it came from, a backlog included)."""
        box = self._outbox
        if not self.ready:
            return False
        if box.pending > 0:
            return box.inflight < self._inflight_cap
        return self._state is not None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._has_work():
                    self._cond.wait()
                if self._closed:
                    return
                state = None
                if self._outbox.pending == 0:
                    state, self._state = self._state, None
            if state is not None:
                self._client.publish(self._state_topic, state, qos=1, retain=True)
                continue
            msg = self._outbox.take()
            if msg is not None:
                self._send(msg)

    def _send(self, msg: Message) -> None:
        try:
            info = self._client.publish(msg.topic, msg.payload, qos=msg.qos, retain=False)
        except ValueError as exc:  # e.g. a payload over the MQTT size limit
            log.error("mqtt: event #%d refused by the client and dropped: %s", msg.seq, exc)
            self._outbox.discard(msg)
            return
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
            msg.qos > 0 and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN  # paho keeps it
        ):
            self._outbox.sent(info.mid, msg)
        else:
            self._outbox.give_back(msg)
            time.sleep(0.05)  # the disconnect callback is on its way
