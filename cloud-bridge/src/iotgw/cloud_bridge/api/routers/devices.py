"""Devices: list and read, desired config with If-Match, credential rotation, latest telemetry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Response, status
from starlette.concurrency import run_in_threadpool

from iotgw.cloud_bridge.api.auth import ClientDep, StateDep
from iotgw.cloud_bridge.api.schemas import ConfigUpdate, DeviceOut, DeviceSecret, TelemetryOut
from iotgw.cloud_bridge.api.telemetry import TelemetryUnavailableError, latest_point
from iotgw.cloud_bridge.registry import repository as repo

router = APIRouter(prefix="/v1/devices", tags=["devices"])


def etag(version: int) -> str:
    """The ETag of a device: its desired config version."""
    return f'"{version}"'


def parse_if_match(value: str) -> int:
    """`"3"`, `W/"3"` or `3` -> 3; 400 naming the header otherwise."""
    raw = value.strip().removeprefix("W/").strip('"')
    if not raw.isdigit():
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            'If-Match must be the desired config version as an ETag, e.g. "3"',
        )
    return int(raw)


@router.get("", response_model=list[DeviceOut])
def list_devices(
    state: StateDep,
    client: ClientDep,
    order_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[DeviceOut]:
    """The caller's devices, optionally those of one order."""
    with state.sessions() as session:
        rows = repo.list_devices(session, client, order_id=order_id, limit=limit, offset=offset)
        return [DeviceOut.of(d) for d in rows]


@router.get("/{device_id}", response_model=DeviceOut)
def get_device(device_id: str, response: Response, state: StateDep, client: ClientDep) -> DeviceOut:
    """One device; its ETag is the desired config version (for If-Match)."""
    with state.sessions() as session:
        device = repo.get_device(session, client, device_id)
        if device is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "device not found")
        response.headers["ETag"] = etag(device.desired_version)
        return DeviceOut.of(device)


@router.put(
    "/{device_id}/config",
    response_model=DeviceOut,
    responses={
        412: {"description": "If-Match is not the current version"},
        428: {"description": "If-Match missing"},
    },
)
def put_config(
    device_id: str,
    body: ConfigUpdate,
    response: Response,
    state: StateDep,
    client: ClientDep,
    if_match: Annotated[str | None, Header()] = None,
) -> DeviceOut:
    """Set the desired config; the bridge delivers it as a retained MQTT message."""
    if if_match is None:
        raise HTTPException(
            status.HTTP_428_PRECONDITION_REQUIRED,
            "If-Match with the current desired config version is required",
        )
    expected = parse_if_match(if_match)
    try:
        with state.sessions.begin() as session:
            repo.set_desired_config(session, client, device_id, expected, body.model_dump())
            device = repo.get_device(session, client, device_id)
            assert device is not None
            out = DeviceOut.of(device)
    except repo.DeviceNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "device not found") from exc
    except repo.VersionMismatchError as exc:
        raise HTTPException(
            status.HTTP_412_PRECONDITION_FAILED,
            f"stale If-Match: the current version is {exc.current}",
            headers={"ETag": etag(exc.current)},
        ) from exc
    state.outbox_written()
    response.headers["ETag"] = etag(out.desired_version)
    return out


@router.post("/{device_id}/credentials", response_model=DeviceSecret)
def rotate_credentials(device_id: str, state: StateDep, client: ClientDep) -> DeviceSecret:
    """Issue a new secret for the device (shown once); the old one stops working once the
    provisioner has applied the change."""
    try:
        with state.sessions.begin() as session:
            secret = repo.rotate_credentials(session, client, device_id)
    except repo.DeviceNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "device not found") from exc
    state.outbox_written()
    return DeviceSecret.of(client, device_id, secret)


@router.get("/{device_id}/telemetry/latest", response_model=TelemetryOut)
async def latest_telemetry(device_id: str, state: StateDep, client: ClientDep) -> TelemetryOut:
    """The device's newest reading in InfluxDB; 404 when it has none yet."""

    def _known() -> bool:
        with state.sessions() as session:
            return repo.get_device(session, client, device_id) is not None

    if not await run_in_threadpool(_known):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "device not found")
    try:
        point = await run_in_threadpool(
            latest_point, state.influx, state.settings.influx_database, client, device_id
        )
    except TelemetryUnavailableError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    if point is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no telemetry for this device yet")
    time = str(point.pop("time"))
    return TelemetryOut(device=device_id, time=time, metrics=point)
