"""Write the JSON Schemas and the AsyncAPI 3 document generated from the models.

`iotgw-contracts-export` writes them into `contracts/schemas/`; `--check` exits 1 when the
committed files differ from what the models generate (CI runs the same comparison as a test).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from iotgw.contracts.envelope import Envelope
from iotgw.contracts.payloads import DesiredConfig, ReportedState, Status, Telemetry

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schemas"

MODELS: dict[str, type[BaseModel]] = {
    "envelope": Envelope,
    "telemetry": Telemetry,
    "status": Status,
    "desired-config": DesiredConfig,
    "reported-state": ReportedState,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of each wire model, by wire alias, keyed by file stem."""
    return {
        name: model.model_json_schema(by_alias=True, mode="serialization")
        for name, model in MODELS.items()
    }


def _channel(address: str, message: str, params: dict[str, str]) -> dict[str, Any]:
    return {
        "address": address,
        "messages": {message: {"$ref": f"#/components/messages/{message}"}},
        "parameters": {name: {"description": text} for name, text in params.items()},
    }


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 description of every channel and message of the platform."""
    device = {"client": "client id (DNS-1123 label)", "device": "device id (DNS-1123 label)"}
    client = {"client": "client id (DNS-1123 label)"}
    channels = {
        "telemetry": _channel("devices/{client}/{device}/telemetry", "telemetry", device),
        "status": _channel("devices/{client}/{device}/status", "status", device),
        "state": _channel("devices/{client}/{device}/state", "reportedState", device),
        "config": _channel("devices/{client}/{device}/config", "desiredConfig", device),
        "purchaseCreated": _channel("purchases/{client}/created", "envelope", client),
        "purchaseCancelled": _channel("purchases/{client}/cancelled", "envelope", client),
        "provisioningReady": _channel("provisioning.{client}.ready", "envelope", client),
        "provisioningFailed": _channel("provisioning.{client}.failed", "envelope", client),
    }

    def op(action: str, channel: str, summary: str) -> dict[str, Any]:
        return {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": summary,
        }

    operations = {
        "publishTelemetry": op("send", "telemetry", "A module publishes a reading (QoS 1)."),
        "publishStatus": op("send", "status", "Retained presence; the Last Will is offline."),
        "publishState": op("send", "state", "A module reports the config version it applied."),
        "receiveConfig": op("receive", "config", "A module receives its retained config."),
        "purchaseCreated": op("send", "purchaseCreated", "The api publishes a purchase."),
        "purchaseCancelled": op("send", "purchaseCancelled", "A purchase is cancelled."),
        "provisioningReady": op("send", "provisioningReady", "A client stack is ready."),
        "provisioningFailed": op("send", "provisioningFailed", "Provisioning failed."),
    }
    schemas = json_schemas()
    names = {
        "envelope": "envelope",
        "telemetry": "telemetry",
        "status": "status",
        "desiredConfig": "desired-config",
        "reportedState": "reported-state",
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "iotgw",
            "version": "1.0.0",
            "description": (
                "MQTT topics are AMQP routing keys on amq.topic with '/' and '.' swapped "
                "(RabbitMQ MQTT plugin)."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": {
                msg: {"name": msg, "payload": {"$ref": f"#/components/schemas/{stem}"}}
                for msg, stem in names.items()
            },
            "schemas": {stem: schemas[stem] for stem in names.values()},
        },
    }


def rendered() -> dict[str, str]:
    """Every generated file's name and text."""
    files = {f"{name}.schema.json": _dump(schema) for name, schema in json_schemas().items()}
    files["asyncapi.json"] = _dump(asyncapi_document())
    return files


def _dump(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def stale_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of generated files that are missing or differ in `directory`."""
    stale = []
    for name, text in rendered().items():
        path = directory / name
        if not path.is_file() or path.read_text() != text:
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    """CLI: write the files, or with --check report stale ones."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=SCHEMA_DIR, help="target folder")
    parser.add_argument("--check", action="store_true", help="only compare, exit 1 if stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.out)
        for name in stale:
            print(f"stale: {args.out / name}", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (args.out / name).write_text(text)
        print(args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
