"""Operator endpoints: every client with products, hardware, deployment date and status."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, status

from iotgw.cloud_bridge.api.auth import StateDep, require_operator
from iotgw.cloud_bridge.api.schemas import ApiKeyOut, ClientCreate, ClientCreated, ClientRow
from iotgw.cloud_bridge.registry import repository as repo

router = APIRouter(
    prefix="/v1/operator", tags=["operator"], dependencies=[Depends(require_operator)]
)


@router.get("/clients", response_model=list[ClientRow])
def list_clients(state: StateDep) -> list[ClientRow]:
    """All clients, their products, hardware, first deployment and latest status."""
    with state.sessions() as session:
        return [ClientRow.of(row) for row in repo.client_overview(session)]


@router.post("/clients", status_code=status.HTTP_201_CREATED, response_model=ClientCreated)
def create_client(body: ClientCreate, state: StateDep) -> ClientCreated:
    """Register a client and issue its first API key (shown once)."""
    try:
        with state.sessions.begin() as session:
            _, key = repo.create_client(session, body.name)
    except repo.ClientExistsError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, "client already exists") from exc
    return ClientCreated(name=body.name, api_key=key)


@router.post("/clients/{name}/keys", status_code=status.HTTP_201_CREATED, response_model=ApiKeyOut)
def issue_key(name: str, state: StateDep) -> ApiKeyOut:
    """Issue another API key for a client (to rotate: issue, switch over)."""
    try:
        with state.sessions.begin() as session:
            key = repo.issue_api_key(session, name)
    except repo.UnknownClientError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "client not found") from exc
    return ApiKeyOut(client=name, api_key=key)
