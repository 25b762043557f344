"""JSON-lines logging on stdout, with the current trace_id when there is one.

Containers run with a read-only root filesystem, so logs go to stdout only. A trace_id is
attached either per call (`log.info("...", extra={"trace_id": tid})`) or for a block of work
with `with trace(tid): ...`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

_trace_id: ContextVar[str | None] = ContextVar("iotgw_trace_id", default=None)

# Attributes every LogRecord has; anything else passed through `extra=` is logged as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, trace_id, extra fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as one line of JSON."""
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        trace_id = getattr(record, "trace_id", None) or _trace_id.get()
        if trace_id:
            entry["trace_id"] = str(trace_id)
        for key, value in vars(record).items():
            if key not in _STANDARD and key != "trace_id":
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO", stream: IO[str] | None = None) -> None:
    """Send every logger's records to `stream` (stdout by default) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pika logs every connection step at INFO; keep its warnings only.
    logging.getLogger("pika").setLevel(logging.WARNING)


@contextlib.contextmanager
def trace(trace_id: object) -> Iterator[None]:
    """Attach `trace_id` to every record logged inside the block (this thread or task)."""
    token = _trace_id.set(str(trace_id))
    try:
        yield
    finally:
        _trace_id.reset(token)
