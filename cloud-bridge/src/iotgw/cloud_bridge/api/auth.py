"""API keys: a client's key scopes every query to that client; the operator key is separate.

Keys arrive as `Authorization: Bearer <key>`, `X-API-Key: <key>` or, for the browser's
EventSource (which cannot set headers), the `iotgw_api_key` cookie on GET requests only.
Client keys are looked up by their sha256 (see `repository.hash_api_key`). The operator key
comes from IOTGW_OPERATOR_KEY; with none configured, operator endpoints refuse every request.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from starlette.concurrency import run_in_threadpool

from iotgw.cloud_bridge.api.state import ApiState, api_state
from iotgw.cloud_bridge.registry import repository as repo

COOKIE = "iotgw_api_key"
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def presented_key(request: Request) -> str | None:
    """The key the request carries, if any."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    header_key = request.headers.get("x-api-key")
    if header_key:
        return header_key
    # The cookie counts for reads only: a browser sends cookies on cross-site form posts, so
    # accepting it on writes would open them to CSRF. Writes carry the key in a header.
    if request.method in {"GET", "HEAD"}:
        return request.cookies.get(COOKIE) or None
    return None


def _lookup(state: ApiState, key: str) -> str | None:
    with state.sessions() as session:
        return repo.client_for_api_key(session, key)


async def current_client(request: Request, state: Annotated[ApiState, Depends(api_state)]) -> str:
    """The client whose API key the request carries; 401 otherwise."""
    key = presented_key(request)
    if key is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "API key required", _CHALLENGE)
    client = await run_in_threadpool(_lookup, state, key)
    if client is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown API key", _CHALLENGE)
    return client


def require_operator(request: Request, state: Annotated[ApiState, Depends(api_state)]) -> None:
    """Pass only requests carrying the operator key; refuse all when none is configured."""
    expected = state.settings.operator_key
    if expected is None or not expected.get_secret_value():
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "operator endpoints are disabled: IOTGW_OPERATOR_KEY unset"
        )
    key = presented_key(request)
    if key is None or not hmac.compare_digest(key.encode(), expected.get_secret_value().encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "operator key required", _CHALLENGE)


ClientDep = Annotated[str, Depends(current_client)]
StateDep = Annotated[ApiState, Depends(api_state)]
