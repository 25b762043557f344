"""Orders: buy modules (idempotent with Idempotency-Key), read them, follow their status."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from iotgw.cloud_bridge.api.auth import ClientDep, StateDep
from iotgw.cloud_bridge.api.schemas import DeviceSecret, OrderCreate, OrderCreated, OrderOut
from iotgw.cloud_bridge.api.state import ApiState
from iotgw.cloud_bridge.registry import repository as repo
from iotgw.cloud_bridge.registry.models import OrderStatus

router = APIRouter(prefix="/v1/orders", tags=["orders"])

FINAL = {OrderStatus.READY.value, OrderStatus.FAILED.value}
KEEPALIVE_S = 15.0


def _place(
    state: ApiState, client: str, body: OrderCreate, key: str | None
) -> tuple[OrderCreated, bool]:
    request = repo.OrderRequest(
        body.product, body.environment, body.archtype, body.hardware, body.quantity
    )
    with state.sessions.begin() as session:
        placed = repo.place_order(session, client, request, key)
        out = OrderCreated(
            **OrderOut.of(placed.order).model_dump(),
            devices=[DeviceSecret.of(client, d, s) for d, s in sorted(placed.secrets.items())],
        )
    if placed.created:
        state.metrics.orders.inc()
        state.outbox_written()
    return out, placed.created


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=OrderCreated,
    responses={200: {"description": "a retry: the order first created with this key"}},
)
def create_order(
    body: OrderCreate,
    response: Response,
    state: StateDep,
    client: ClientDep,
    idempotency_key: Annotated[
        str | None, Header(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")
    ] = None,
) -> OrderCreated:
    """Buy modules. A retry with the same Idempotency-Key returns the first order (200)."""
    try:
        out, created = _place(state, client, body, idempotency_key)
    except repo.IdempotencyConflictError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    if not created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/v1/orders/{out.id}"
    return out


@router.get("", response_model=list[OrderOut])
def list_orders(
    state: StateDep,
    client: ClientDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[OrderOut]:
    """The caller's orders, newest first."""
    with state.sessions() as session:
        return [
            OrderOut.of(o) for o in repo.list_orders(session, client, limit=limit, offset=offset)
        ]


def _get(state: ApiState, client: str, order_id: str) -> OrderOut | None:
    with state.sessions() as session:
        order = repo.get_order(session, client, order_id)
        return OrderOut.of(order) if order is not None else None


@router.get("/{order_id}", response_model=OrderOut)
def get_order(order_id: str, state: StateDep, client: ClientDep) -> OrderOut:
    """One of the caller's orders; 404 for unknown ids and other clients' orders alike."""
    order = _get(state, client, order_id)
    if order is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "order not found")
    return order


@router.get(
    "/{order_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def order_events(
    order_id: str, request: Request, state: StateDep, client: ClientDep
) -> StreamingResponse:
    """Server-sent events: `event: status` with the order as JSON, now and on every change.

    The stream ends after Ready or Failed. It polls the registry, so it follows changes made by
    any api replica.
    """
    first = await run_in_threadpool(_get, state, client, order_id)
    if first is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "order not found")
    return StreamingResponse(
        _stream(request, state, client, first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(
    request: Request, state: ApiState, client: str, first: OrderOut
) -> AsyncIterator[str]:
    current: OrderOut | None = first
    last: tuple[str, str | None] | None = None
    idle = 0.0
    interval = state.settings.sse_poll_interval_s
    while current is not None:
        seen = (current.status, current.reason)
        if seen != last:
            yield f"event: status\ndata: {json.dumps(current.model_dump(mode='json'))}\n\n"
            last, idle = seen, 0.0
            if current.status in FINAL:
                return
        elif idle >= KEEPALIVE_S:
            yield ": keepalive\n\n"
            idle = 0.0
        await asyncio.sleep(interval)
        idle += interval
        if await request.is_disconnected():
            return
        current = await run_in_threadpool(_get, state, client, first.id)
