"""The committed JSON Schemas and AsyncAPI document match what the models generate."""

from __future__ import annotations

import json
from pathlib import Path

from iotgw.contracts.export import SCHEMA_DIR, asyncapi_document, main, stale_files


def test_committed_schemas_are_current() -> None:
    assert stale_files() == [], "run `iotgw-contracts-export` and commit contracts/schemas/"


def test_check_flags_a_changed_file(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    assert main(["--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "telemetry.schema.json").write_text("{}\n")
    assert main(["--out", str(tmp_path), "--check"]) == 1


def test_envelope_schema_uses_wire_names() -> None:
    schema = json.loads((SCHEMA_DIR / "envelope.schema.json").read_text())
    assert "MessageAttributes" in schema["properties"]
    metadata = schema["$defs"]["Metadata"]["properties"]
    assert "origing" in metadata


def test_asyncapi_is_version_3_and_refs_resolve() -> None:
    doc = asyncapi_document()
    assert doc["asyncapi"].startswith("3.")
    for channel in doc["channels"].values():
        for ref in channel["messages"].values():
            name = ref["$ref"].rsplit("/", 1)[-1]
            assert name in doc["components"]["messages"]
