"""A minimal Prometheus text endpoint on the standard library (the agent stays small).

`serve_metrics(port, collect)` serves `collect()` (name -> value, all gauges or counters named
accordingly) at `/metrics` from a daemon thread; the values are read from plain counters, so
the thread never touches the buffer's SQLite connection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Collect = Callable[[], Mapping[str, float]]


def render(values: Mapping[str, float]) -> bytes:
    """Prometheus text format (untyped samples)."""
    return "".join(f"{name} {value}\n" for name, value in sorted(values.items())).encode()


def serve_metrics(port: int, collect: Collect, host: str = "0.0.0.0") -> ThreadingHTTPServer:  # noqa: S104 - scraped from outside the container
    """Start serving `/metrics` on `port`; returns the server (call `shutdown()` to stop)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/metrics":
                self.send_error(404)
                return
            body = render(collect())
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Scrapes are not worth a log line."""

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    return server
