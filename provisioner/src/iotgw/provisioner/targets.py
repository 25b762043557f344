"""Where a rendered stack goes: the interface both targets implement."""

from __future__ import annotations

from typing import Protocol

from iotgw.provisioner.render import Manifest


def object_ref(manifest: Manifest) -> str:
    """`Kind/name` of a manifest, as reported in the status event's `applied` list."""
    return f"{manifest['kind']}/{manifest['metadata']['name']}"


class Target(Protocol):
    """Applies a client's objects idempotently and removes them again."""

    def apply(self, client: str, objects: list[Manifest]) -> list[str]:
        """Make the objects exist as rendered; return `Kind/name` of each."""

    def remove(self, client: str) -> list[str]:
        """Remove everything applied for `client`; harmless when nothing is there."""
