"""One network loop for any number of paho clients: epoll + timers, no thread per device.

paho-mqtt supports external loops: it tells us when its socket opens or closes and when it has
bytes to write (`on_socket_*` callbacks); we call `loop_read`, `loop_write` and, once a second,
`loop_misc` (keepalive). The agent runs this loop with one client, the simulator with thousands.
Timers (sampling ticks, reconnect backoff) share the same loop, so device code never needs a lock.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import selectors
import socket
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

MISC_INTERVAL_S = 1.0

log = logging.getLogger(__name__)


@dataclass(order=True)
class Timer:
    """A scheduled callback; `cancel()` makes it a no-op."""

    when: float
    order: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        """Do not run the callback."""
        self.cancelled = True


class NetLoop:
    """Drives paho clients' sockets and timers from one thread."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._timers: list[Timer] = []
        self._order = itertools.count()
        self._clients: set[mqtt.Client] = set()
        self._paused: set[mqtt.Client] = set()
        # Clients with bytes queued: written at the top of the next iteration, in one go per
        # client; only what the socket does not take gets EVENT_WRITE (saves two epoll_ctl
        # calls per message).
        self._to_write: set[mqtt.Client] = set()
        self._write_registered: set[mqtt.Client] = set()
        self._stopping = False
        self.after_iteration: list[Callable[[], object]] = []
        # Wraps each batch of due timers; the simulator makes it one SQLite transaction, so all
        # readings sampled in an iteration are committed together. Safe for persist-before-
        # publish because bytes only leave in `_flush_writes`, after the batch has committed.
        self.timer_batch: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext

    # --- clients -------------------------------------------------------------------------------
    def attach(self, client: mqtt.Client) -> None:
        """Let this loop drive `client`'s socket."""
        client.on_socket_open = self._on_open
        client.on_socket_close = self._on_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self._clients.add(client)

    def detach(self, client: mqtt.Client) -> None:
        """Stop driving `client` (after it disconnected)."""
        self._clients.discard(client)

    def _events(self, client: mqtt.Client) -> int:
        events = 0 if client in self._paused else selectors.EVENT_READ
        if client in self._write_registered:
            events |= selectors.EVENT_WRITE
        return events

    def _update(self, client: mqtt.Client, sock: Any) -> None:
        events = self._events(client)
        try:
            if events:
                self._selector.modify(sock, events, client)
            else:
                self._selector.unregister(sock)
        except KeyError:
            if events:
                self._selector.register(sock, events, client)

    def _on_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._update(client, sock)

    def _on_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._paused.discard(client)
        self._to_write.discard(client)
        self._write_registered.discard(client)
        # Never registered, or already gone: either way nothing to undo.
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._to_write.add(client)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._to_write.discard(client)
        if client in self._write_registered:
            self._write_registered.discard(client)
            self._update(client, sock)

    def _flush_writes(self) -> None:
        while self._to_write:
            client = self._to_write.pop()
            sock = client.socket()
            if sock is None:
                continue
            self._service(client, selectors.EVENT_WRITE)
            sock = client.socket()
            if sock is not None and client.want_write() and client not in self._write_registered:
                # The socket's buffer is full: wait until the kernel says it is writable.
                self._write_registered.add(client)
                self._update(client, sock)

    def pause_reading(self, client: mqtt.Client, seconds: float) -> None:
        """Leave `client`'s incoming bytes unread for `seconds` (a slow consumer)."""
        sock = client.socket()
        if sock is None or client in self._paused:
            return
        self._paused.add(client)
        self._update(client, sock)

        def resume() -> None:
            self._paused.discard(client)
            current = client.socket()
            if current is not None:
                self._update(client, current)

        self.call_later(seconds, resume)

    # --- timers --------------------------------------------------------------------------------
    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` on the loop after `delay` seconds."""
        timer = Timer(time.monotonic() + max(0.0, delay), next(self._order), callback)
        heapq.heappush(self._timers, timer)
        return timer

    # --- running -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Make `run` return after the current iteration (safe from a signal handler)."""
        self._stopping = True

    def run(self, until: Callable[[], bool] | None = None, timeout: float | None = None) -> None:
        """Run until `stop()`, `until()` is true, or `timeout` seconds passed."""
        self._stopping = False
        deadline = None if timeout is None else time.monotonic() + timeout
        next_misc = time.monotonic() + MISC_INTERVAL_S
        while not self._stopping and not (until is not None and until()):
            self._flush_writes()
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return
            wait = next_misc - now
            if self._timers:
                wait = min(wait, self._timers[0].when - now)
            if deadline is not None:
                wait = min(wait, deadline - now)
            if self._to_write:
                wait = 0.0
            for key, mask in self._selector.select(max(0.0, wait)):
                self._service(key.data, mask)
            self._run_timers()
            if time.monotonic() >= next_misc:
                next_misc = time.monotonic() + MISC_INTERVAL_S
                for client in list(self._clients):
                    client.loop_misc()
            for hook in self.after_iteration:
                hook()

    def _service(self, client: mqtt.Client, mask: int) -> None:
        try:
            if mask & selectors.EVENT_READ and client not in self._paused:
                client.loop_read()
            if mask & selectors.EVENT_WRITE and client.socket() is not None:
                client.loop_write()
        except Exception:
            # One module's failure must not stop the others: log it and cut its connection,
            # so its session reconnects and replays from its buffer.
            log.exception("client failed; dropping its connection")
            sock = client.socket()
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]

    def _run_timers(self) -> None:
        now = time.monotonic()
        if not (self._timers and self._timers[0].when <= now):
            return
        with self.timer_batch():
            while self._timers and self._timers[0].when <= now:
                timer = heapq.heappop(self._timers)
                if not timer.cancelled:
                    timer.callback()

    def close(self) -> None:
        """Release the selector."""
        self._selector.close()
