"""Desired-config handling: validate, apply through a handler, persist, report.

Decisions:
- The payload must be a valid `DesiredConfig`; beyond the schema, the handler checks it against
  what the device has (every enabled sensor and every threshold's metric must exist).
- A version lower than the one in force is refused as stale; the same version again (the retained
  message redelivered after a reconnect) is re-reported, not re-applied.
- A refused config changes nothing: the last good config stays in force and the report carries
  `status="rejected"`, the refused version (when it could be read) and the reason.
- The applied config is persisted with the buffer, so a restart resumes with it before the broker
  is even reachable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Protocol

from pydantic import ValidationError

from iotgw.contracts.payloads import DesiredConfig, ReportedState

MAX_REASON = 1000


class ConfigRejectedError(ValueError):
    """The handler refuses a config; the message is the reason reported to the cloud."""


class ConfigHandler(Protocol):
    """Applies a validated config to the device (raises ConfigRejectedError to refuse it)."""

    def __call__(self, config: DesiredConfig) -> None:
        """Apply `config` or raise ConfigRejectedError without changing anything."""
        ...


class ConfigStore(Protocol):
    """Where the applied config is persisted (a `DeviceBuffer` is one)."""

    def applied_config(self) -> dict[str, object] | None:
        """The persisted config, if any."""
        ...

    def save_applied_config(self, config: dict[str, object]) -> None:
        """Persist the config now in force."""
        ...


class ConfigManager:
    """Turns raw config messages into applied configs and `ReportedState` payloads."""

    def __init__(
        self,
        store: ConfigStore,
        handler: ConfigHandler,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._handler = handler
        self._clock = clock
        saved = store.applied_config()
        self.current: DesiredConfig | None = (
            DesiredConfig.model_validate(saved) if saved is not None else None
        )

    @property
    def applied_version(self) -> int:
        """Version in force (0 before any config)."""
        return self.current.version if self.current else 0

    def restore(self) -> None:
        """Re-apply the persisted config at start (before any broker contact)."""
        if self.current is not None:
            self._handler(self.current)

    def receive(self, raw: bytes) -> ReportedState:
        """Validate and apply `raw`; returns what to report on the state topic."""
        try:
            config = DesiredConfig.model_validate_json(raw)
        except ValidationError as exc:
            return self._rejected(_version_of(raw), _summarize(exc))
        if self.current is not None and config.version < self.current.version:
            return self._rejected(
                config.version, f"stale version {config.version} < {self.current.version}"
            )
        if self.current == config:
            return self._report()
        try:
            self._handler(config)
        except ConfigRejectedError as exc:
            return self._rejected(config.version, str(exc))
        self._store.save_applied_config(config.model_dump(mode="json"))
        self.current = config
        return self._report()

    def _report(self) -> ReportedState:
        return ReportedState(applied_version=self.applied_version, ts=self._clock())

    def _rejected(self, version: int | None, reason: str) -> ReportedState:
        return ReportedState(
            applied_version=self.applied_version,
            ts=self._clock(),
            status="rejected",
            rejected_version=version,
            reason=reason[:MAX_REASON],
        )


def _summarize(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{where}: {err['msg']}")
    return "invalid config: " + "; ".join(parts)


def _version_of(raw: bytes) -> int | None:
    """The version of a config that failed validation, when one can be read at all."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    version = data.get("version") if isinstance(data, dict) else None
    return version if isinstance(version, int) and version >= 0 else None
