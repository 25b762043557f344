"""The two ways provisioning can fail, which decide between a retry and the dead-letter queue."""

from __future__ import annotations


class ProvisioningError(Exception):
    """Base: `reason` is what goes into the dead-letter header and the failed status."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientError(ProvisioningError):
    """Worth retrying: a 5xx, a 429, a timeout or a refused connection."""


class PermanentError(ProvisioningError):
    """Retrying cannot help: a 4xx from an API, or input that cannot be applied."""


def is_transient_status(status: int) -> bool:
    """HTTP statuses that a retry may cure."""
    return status >= 500 or status in {408, 429}
