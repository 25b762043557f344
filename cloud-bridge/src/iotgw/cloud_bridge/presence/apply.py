"""Apply parsed status and state messages through the registry repository.

The rules (stale offline never beats a newer online, `last_seen` only moves forward, older
reports ignored) live in `registry.repository.record_status` / `record_state`; this module only
tells an unknown device apart from a stale message, so the consumer can dead-letter the first.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy.orm import Session

from iotgw.cloud_bridge.presence.messages import StateMessage, StatusMessage
from iotgw.cloud_bridge.registry import repository as repo


class Outcome(StrEnum):
    """What applying a message did."""

    APPLIED = "applied"
    STALE = "stale"
    UNKNOWN_DEVICE = "unknown_device"


def apply_status(session: Session, message: StatusMessage) -> Outcome:
    """Record presence; the caller commits."""
    if repo.get_device(session, message.client, message.device) is None:
        return Outcome.UNKNOWN_DEVICE
    s = message.status
    changed = repo.record_status(
        session, message.client, message.device, s.state == "online", s.epoch, s.ts
    )
    return Outcome.APPLIED if changed else Outcome.STALE


def apply_state(session: Session, message: StateMessage) -> Outcome:
    """Record the reported config version (and a refusal, if any); the caller commits."""
    if repo.get_device(session, message.client, message.device) is None:
        return Outcome.UNKNOWN_DEVICE
    s = message.state
    applied = repo.record_state(
        session,
        message.client,
        message.device,
        s.applied_version,
        s.ts,
        rejected_version=s.rejected_version if s.status == "rejected" else None,
        reason=s.reason,
    )
    return Outcome.APPLIED if applied else Outcome.STALE
