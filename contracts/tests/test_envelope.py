"""The envelope stays wire-compatible with the original system and rejects bad fields by name."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from iotgw.contracts.envelope import (
    Envelope,
    describe_error,
    format_published_on,
    parse_published_on,
)

# ARCHITECTURE.md's example, with the elided trace_id written out in full.
ORIGINAL = """{"client": "cliente02", "namespace": "cliente02", "environment": "Development",
 "archtype": "SaaS", "hardware": "Dedicated", "product": "Product-A",
 "MessageAttributes": {"event_type": {"Type": "String",
   "Value": "mycompany.producer.event.cliente02.published"},
   "published_on": "2023.01.2.23.02.642883101",
   "trace_id": "9a2ae9de-5b7e-4c1a-9f0e-2d3c4b5a6978", "retrace_intent": "0"},
 "Metadata": {"host": "hostname", "origing": "Cloud", "publisher": "producer"}}"""


def _key_paths(doc: Any, prefix: str = "") -> list[str]:
    """Every key path in document order, so key order and nesting are compared too."""
    if not isinstance(doc, dict):
        return []
    paths = []
    for key, value in doc.items():
        paths.append(prefix + key)
        paths.extend(_key_paths(value, prefix + key + "."))
    return paths


def test_original_example_round_trips_with_the_same_keys_and_values() -> None:
    original = json.loads(ORIGINAL)
    envelope = Envelope.from_json(ORIGINAL)
    again = json.loads(envelope.to_json())
    assert _key_paths(again) == _key_paths(original)
    assert again == original
    assert again["Metadata"]["origing"] == "Cloud"
    assert again["MessageAttributes"]["retrace_intent"] == "0"


def test_clean_python_names_read_the_wire_fields() -> None:
    envelope = Envelope.from_json(ORIGINAL)
    assert envelope.metadata.origin == "Cloud"
    assert envelope.message_attributes.retrace_intent == 0
    assert envelope.trace_id == uuid.UUID("9a2ae9de-5b7e-4c1a-9f0e-2d3c4b5a6978")
    event = envelope.message_attributes.event_type
    assert (event.company, event.app, event.message_type, event.client, event.action) == (
        "mycompany",
        "producer",
        "event",
        "cliente02",
        "published",
    )
    assert envelope.message_attributes.published_at.day == 2


def _with(path: list[str], value: Any) -> str:
    doc = json.loads(ORIGINAL)
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(doc)


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (["client"], "Cliente02", "client"),
        (["client"], "a" * 64, "client"),
        (["client"], "bad;rm -rf", "client"),
        (["namespace"], "under_score", "namespace"),
        (["environment"], "Dev", "environment"),
        (["archtype"], "Cloud", "archtype"),
        (["hardware"], "Shared", "hardware"),
        (["product"], "Product A!", "product"),
        (["MessageAttributes", "event_type", "Value"], "mycompany.producer", "Value"),
        (["MessageAttributes", "event_type", "Type"], "Number", "Type"),
        (["MessageAttributes", "published_on"], "2023-01-02T23:02:00", "published_on"),
        (["MessageAttributes", "published_on"], "2023.13.40.23.02.642883101", "published_on"),
        (["MessageAttributes", "trace_id"], "9a2ae9de-...", "trace_id"),
        (["MessageAttributes", "retrace_intent"], "-1", "retrace_intent"),
        (["MessageAttributes", "retrace_intent"], "one", "retrace_intent"),
        (["Metadata", "origing"], _DELETE, "origing"),
        (["Metadata", "host"], "", "host"),
        (["surprise"], "extra", "surprise"),
    ],
)
def test_each_invalid_field_is_rejected_naming_it(path: list[str], value: Any, named: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Envelope.from_json(_with(path, value))
    assert named in describe_error(caught.value)


def test_event_type_must_name_the_same_client() -> None:
    raw = _with(
        ["MessageAttributes", "event_type", "Value"], "mycompany.producer.event.other.published"
    )
    with pytest.raises(ValidationError, match="client segment"):
        Envelope.from_json(raw)


def test_new_fills_trace_id_published_on_and_metadata() -> None:
    envelope = Envelope.new(
        client="acme", product="Product-B", app="api", action="created", publisher="api"
    )
    attrs = envelope.message_attributes
    assert attrs.event_type.value == "mycompany.api.event.acme.created"
    assert isinstance(attrs.trace_id, uuid.UUID)
    assert attrs.retrace_intent == 0
    assert envelope.namespace == "acme"
    assert envelope.metadata.host
    assert envelope.metadata.origin == "Cloud"
    assert Envelope.from_json(envelope.to_json()) == envelope


def test_two_new_envelopes_have_different_trace_ids() -> None:
    first = Envelope.new(client="acme", product="P", app="api", action="created", publisher="a")
    second = Envelope.new(client="acme", product="P", app="api", action="created", publisher="a")
    assert first.trace_id != second.trace_id


def test_derive_keeps_the_trace_and_with_retry_counts() -> None:
    order = Envelope.new(
        client="acme", product="Product-A", app="api", action="created", publisher="api"
    )
    status = order.derive(app="provisioner", action="ready", publisher="provisioner", ok=True)
    assert status.trace_id == order.trace_id
    assert status.message_attributes.event_type.value == "mycompany.provisioner.event.acme.ready"
    assert status.data == {"ok": True}
    retried = order.with_retry().with_retry()
    assert retried.message_attributes.retrace_intent == 2
    assert json.loads(retried.to_json())["MessageAttributes"]["retrace_intent"] == "2"


def test_published_on_format_round_trips() -> None:
    stamp = format_published_on()
    parsed = parse_published_on(stamp)
    assert format_published_on(parsed)[:16] == stamp[:16]
    assert len(stamp.split(".")[-1]) == 9
