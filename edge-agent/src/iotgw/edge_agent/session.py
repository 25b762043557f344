"""The MQTT session of one device on paho-mqtt 2.x, driven by a shared `NetLoop`.

Decisions:
- MQTT 3.1.1 (all RabbitMQ 3.10 speaks), clean_session=False, QoS 1 everywhere (the plugin
  downgrades QoS 2 anyway), keepalive from the settings.
- The buffer is the only source of truth for readings: paho's own resend queue is dropped on
  every (re)connect and the session replays the buffer oldest first, keeping at most `window`
  readings in flight; each PUBACK deletes its reading and lets the next one go. Per-device order
  therefore holds across outages; a reading whose PUBACK was lost is sent again (a duplicate
  with the same seq, never a gap).
- Presence: each connection attempt takes a new persisted epoch; the Last Will is a retained
  `offline` with that epoch, and a retained `online` with it is the first publish after CONNACK.
  A clean stop publishes `offline` itself before DISCONNECT (which suppresses the Will).
- Reconnects back off exponentially (`backoff_min_s` doubling up to `backoff_max_s`) with
  "equal jitter" (a random half of the delay), so a broker restart is not met by a thundering
  herd; a CONNACK that does not come within `connect_timeout_s` counts as a failure.
- `ConnectGate` caps handshakes in progress, so thousands of modules connect in parallel
  without overflowing the broker's accept backlog.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from iotgw.contracts.payloads import Telemetry
from iotgw.contracts.topics import DeviceKind
from iotgw.edge_agent.device import DeviceCore
from iotgw.edge_agent.netloop import NetLoop, Timer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsFiles:
    """TLS material; `ca_file` None means the system's trust store."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class LinkSettings:
    """How a session reaches the broker."""

    host: str
    port: int
    username: str
    password: str
    keepalive_s: int = 30
    tls: TlsFiles | None = None
    window: int = 50
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    connect_timeout_s: float = 10.0
    # paho's TCP connect blocks the loop (and so sampling, and in the simulator every module)
    # while packets vanish into a cut link; keep that stall short. The CONNACK wait above is a
    # loop timer and blocks nothing.
    tcp_connect_timeout_s: float = 2.0


@dataclass
class SessionStats:
    """Counters of one session (the simulator sums them over its modules)."""

    sampled: int = 0
    sent: int = 0
    acked: int = 0
    connects: int = 0
    disconnects: int = 0
    connect_failures: int = 0
    configs_applied: int = 0
    configs_rejected: int = 0
    extra_sent: int = 0
    last_disconnect_reason: str = field(default="")


class ConnectGate:
    """At most `limit` handshakes in progress; the rest wait their turn (FIFO)."""

    def __init__(self, loop: NetLoop, limit: int = 200) -> None:
        self._loop = loop
        self.limit = limit
        self.active = 0
        self._waiting: deque[Callable[[], None]] = deque()

    def acquire(self, start: Callable[[], None]) -> None:
        """Run `start` now if a slot is free, otherwise when one is released."""
        if self.active < self.limit:
            self.active += 1
            start()
        else:
            self._waiting.append(start)

    def release(self) -> None:
        """A handshake finished (either way); start the next one on the loop."""
        self.active -= 1
        if self._waiting:
            self.active += 1
            # On the loop, not here: a failing connect must not recurse through the queue.
            self._loop.call_later(0, self._waiting.popleft())


class MqttSession:
    """Connects one `DeviceCore` to the broker and keeps it connected."""

    def __init__(
        self,
        core: DeviceCore,
        link: LinkSettings,
        loop: NetLoop,
        gate: ConnectGate | None = None,
        rng: random.Random | None = None,
        tick_jitter: float = 0.0,
        on_reading: Callable[[MqttSession, Telemetry], None] | None = None,
    ) -> None:
        self.core = core
        self.link = link
        self.loop = loop
        self.gate = gate or ConnectGate(loop)
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.tick_jitter = tick_jitter
        self.on_reading = on_reading
        self.stats = SessionStats()
        self.connected = False
        self.closed = False
        self._stopping = False
        self._sampling = False
        self._holding_gate = False
        self._attempt = 0
        self._inflight: dict[int, int] = {}
        self._cursor = -1
        self._backlog = True
        self._tick_timer: Timer | None = None
        self._connect_timer: Timer | None = None
        self._offline_until = 0.0
        ident = core.identity
        self.topics = {kind: ident.topic(kind) for kind in DeviceKind}
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.core.identity.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        client.username_pw_set(self.link.username, self.link.password)
        client.max_inflight_messages_set(self.link.window + 10)
        client.max_queued_messages_set(0)
        client.connect_timeout = self.link.tcp_connect_timeout_s
        if self.link.tls is not None:
            tls = self.link.tls
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
            )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.connect_async(self.link.host, self.link.port, self.link.keepalive_s)
        self.loop.attach(client)
        return client

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self, sample: bool = True, first_tick_s: float = 0.0) -> None:
        """Begin connecting (and sampling after `first_tick_s`, unless `sample` is False)."""
        if sample:
            self.start_sampling(first_tick_s)
        self.gate.acquire(self._connect)

    def start_sampling(self, first_tick_s: float = 0.0) -> None:
        """Take readings on the device's schedule, the first after `first_tick_s`."""
        self._sampling = True
        self._tick_timer = self.loop.call_later(first_tick_s, self._tick)

    def stop_sampling(self) -> None:
        """Take no more readings (what is buffered still goes out)."""
        self._sampling = False
        if self._tick_timer is not None:
            self._tick_timer.cancel()

    def stop(self) -> None:
        """Clean stop: no more readings, `offline` published, DISCONNECT sent."""
        self.stop_sampling()
        self._stopping = True
        if self._connect_timer is not None:
            self._connect_timer.cancel()
        if self.connected:
            self.client.publish(
                self.topics[DeviceKind.STATUS], self.core.status("offline"), qos=1, retain=True
            )
            self.client.disconnect()
        else:
            self.closed = True

    @property
    def inflight(self) -> int:
        """Readings published and not yet acknowledged."""
        return len(self._inflight)

    # --- connecting ----------------------------------------------------------------------------
    def _connect(self) -> None:
        self._holding_gate = True
        if self._stopping:
            self._release_gate()
            self.closed = True
            return
        offline_for = self._offline_until - time.monotonic()
        if offline_for > 0:  # the network is down (simulated outage): try when it is back
            self._release_gate()
            self.loop.call_later(offline_for, lambda: self.gate.acquire(self._connect))
            return
        will = self.core.next_connection()
        self.client.will_set(self.topics[DeviceKind.STATUS], will, qos=1, retain=True)
        try:
            self.client.reconnect()
        except OSError as exc:
            log.debug(
                "connect failed", extra={"device": self.core.identity.device, "error": str(exc)}
            )
            self.stats.connect_failures += 1
            self._release_gate()
            self._retry_later()
            return
        self._connect_timer = self.loop.call_later(
            self.link.connect_timeout_s, self._connect_timed_out
        )

    def _connect_timed_out(self) -> None:
        if not self.connected:
            self.drop_connection()

    def _release_gate(self) -> None:
        if self._holding_gate:
            self._holding_gate = False
            self.gate.release()

    def _retry_later(self) -> None:
        if self._stopping:
            self.closed = True
            return
        delay = min(self.link.backoff_max_s, self.link.backoff_min_s * 2**self._attempt)
        delay = delay / 2 + self.rng.uniform(0, delay / 2)
        self._attempt = min(self._attempt + 1, 30)
        delay = max(delay, self._offline_until - time.monotonic())
        self.loop.call_later(delay, lambda: self.gate.acquire(self._connect))

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        self._release_gate()
        if self._connect_timer is not None:
            self._connect_timer.cancel()
        if reason.is_failure:
            log.warning(
                "connection refused",
                extra={"device": self.core.identity.device, "reason": str(reason)},
            )
            self.stats.connect_failures += 1
            return  # the broker closes the socket; _on_disconnect schedules the retry
        self.connected = True
        self._attempt = 0
        self.stats.connects += 1
        log.info("connected", extra={"device": self.core.identity.device, "epoch": self.core.epoch})
        # Our buffer, not paho's queue, decides what is resent and in which order.
        client.drop_out_messages()
        self._inflight.clear()
        self.core.buffer.flush_acks()
        self._cursor = -1
        self._backlog = True
        status = self.core.status("online")
        client.publish(self.topics[DeviceKind.STATUS], status, qos=1, retain=True)
        client.subscribe(self.topics[DeviceKind.CONFIG], qos=1)
        self._fill()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        was_connected = self.connected
        self.connected = False
        self._inflight.clear()
        # paho's queue is left alone here (this may run inside paho's own iteration over it);
        # it is dropped on the next CONNACK.
        if self._connect_timer is not None:
            self._connect_timer.cancel()
        if self._holding_gate:
            self.stats.connect_failures += 1
            self._release_gate()
        if was_connected:
            self.stats.disconnects += 1
            self.stats.last_disconnect_reason = str(reason)
            log.info(
                "disconnected", extra={"device": self.core.identity.device, "reason": str(reason)}
            )
        if self._stopping:
            self.closed = True
            return
        self._retry_later()

    # --- readings ------------------------------------------------------------------------------
    def _schedule_tick(self, delay: float) -> None:
        if self.tick_jitter:
            delay *= 1 + self.rng.uniform(-self.tick_jitter, self.tick_jitter)
        self._tick_timer = self.loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        if not self._sampling:
            return
        reading, delay = self.core.tick()
        if reading is not None:
            self.stats.sampled += 1
            if self.on_reading is not None:
                self.on_reading(self, reading)
            self._fill()
        self._schedule_tick(delay)

    def _fill(self) -> None:
        """Publish buffered readings, oldest first, while the window has room.

        In steady state the newest reading is the only unsent one and goes out from memory (it
        was committed before we got here); after a reconnect or a full window (`_backlog`), the
        unsent readings are read back from disk in seq order.
        """
        room = self.link.window - len(self._inflight)
        if not self.connected or room <= 0:
            return
        topic = self.topics[DeviceKind.TELEMETRY]
        last = self.core.buffer.last_appended
        if not self._backlog and last is not None and last.seq > self._cursor:
            if last.seq == self._cursor + 1:
                self._publish(topic, last.seq, last.payload)
                return
            self._backlog = True
        if self._backlog:
            rows = self.core.buffer.pending(after=self._cursor, limit=room)
            for pending in rows:
                self._publish(topic, pending.seq, pending.payload)
            self._backlog = len(rows) == room

    def _publish(self, topic: str, seq: int, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        self._inflight[info.mid] = seq
        self._cursor = seq
        self.stats.sent += 1

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any
    ) -> None:
        seq = self._inflight.pop(mid, None)
        if seq is None:
            return  # status, state or an extra (fault) publish
        self.core.buffer.ack(seq)
        self.stats.acked += 1
        self._fill()

    # --- config --------------------------------------------------------------------------------
    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic != self.topics[DeviceKind.CONFIG]:
            return
        state = self.core.receive_config(bytes(message.payload))
        if state.status == "applied":
            self.stats.configs_applied += 1
            if self._sampling and self._tick_timer is not None:
                # A new sampling interval takes effect now, not after the old one ran out.
                self._tick_timer.cancel()
                self._schedule_tick(min(self.core.sampling.interval_s, 1.0))
        else:
            self.stats.configs_rejected += 1
            log.warning(
                "config rejected",
                extra={"device": self.core.identity.device, "reason": state.reason},
            )
        client.publish(self.topics[DeviceKind.STATE], state.to_json(), qos=1)

    # --- faults (used by the simulator) --------------------------------------------------------
    def drop_connection(self) -> None:
        """Cut the TCP connection without DISCONNECT (the broker then publishes the Will)."""
        sock = self.client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):  # already half-closed
                sock.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]

    def network_down(self, seconds: float) -> None:
        """Lose the network for `seconds`: drop the connection and do not reconnect until then."""
        self._offline_until = time.monotonic() + seconds
        self.drop_connection()

    def publish_extra(self, kind: DeviceKind, payload: bytes) -> bool:
        """Publish a payload outside the buffer (duplicates, malformed data); True if sent."""
        if not self.connected:
            return False
        self.client.publish(self.topics[kind], payload, qos=1)
        self.stats.extra_sent += 1
        return True
