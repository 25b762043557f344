"""The HTML pages: login, the customer portal, the operator's clients page.

Pages read the registry through the same repository and response models as the JSON API, so a
page shows exactly what the API returns; everything the browser does afterwards (buy, follow an
order's status, refresh devices) goes through the JSON API from `static/portal.js`. Templates
are rendered with Jinja2 autoescaping on every template, and pages send a Content-Security-Policy
that allows only this origin's own scripts and styles (no inline script at all).
"""

from __future__ import annotations

import hmac
from datetime import datetime
from pathlib import Path
from typing import Any, get_args

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from starlette.concurrency import run_in_threadpool

from iotgw.cloud_bridge.api.auth import StateDep, presented_key, require_operator
from iotgw.cloud_bridge.api.schemas import ClientRow, DeviceOut, OrderOut
from iotgw.cloud_bridge.api.state import ApiState
from iotgw.cloud_bridge.registry import repository as repo
from iotgw.cloud_bridge.web.login import (
    clear_key_cookie,
    form_field,
    same_origin,
    set_key_cookie,
)
from iotgw.contracts.envelope import Archtype, Hardware
from iotgw.contracts.envelope import Environment as Stage

HERE = Path(__file__).parent
LOGIN = "/portal/login"
# Suggestions for the product field; the provisioner's catalog decides what can be bought
# (an unknown product ends Failed with the catalog's reason, shown on the order).
PRODUCTS = ("Product-A", "Product-B", "Product-C")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'none'; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else ""


def templates() -> Jinja2Templates:
    """Templates with autoescaping on for every file, whatever its extension."""
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)
    env.filters["when"] = _when
    return Jinja2Templates(env=env)


def install(app: FastAPI) -> None:
    """Add the pages and `/static` to the api app."""
    app.include_router(create_router(templates()))
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")


def _client_of(state: ApiState, key: str | None) -> str | None:
    if not key:
        return None
    with state.sessions() as session:
        return repo.client_for_api_key(session, key)


def _is_operator_key(state: ApiState, key: str) -> bool:
    expected = state.settings.operator_key
    if expected is None or not expected.get_secret_value():
        return False
    return hmac.compare_digest(key.encode(), expected.get_secret_value().encode())


def _to_login() -> RedirectResponse:
    return RedirectResponse(LOGIN, status.HTTP_303_SEE_OTHER, headers=SECURITY_HEADERS)


def create_router(pages: Jinja2Templates) -> APIRouter:
    """The page routes, rendering with `pages`."""
    router = APIRouter(include_in_schema=False)

    def render(
        request: Request, name: str, context: dict[str, Any], code: int = 200
    ) -> HTMLResponse:
        response = pages.TemplateResponse(request, name, context, status_code=code)
        response.headers.update(SECURITY_HEADERS)
        return response

    @router.get("/")
    def home() -> RedirectResponse:
        """The portal is the home page."""
        return RedirectResponse("/portal", status.HTTP_303_SEE_OTHER)

    @router.get(LOGIN, response_class=HTMLResponse)
    def login_form(request: Request) -> HTMLResponse:
        """Ask for the API key."""
        return render(request, "login.html", {"error": None})

    @router.post(LOGIN, response_model=None)
    async def login(request: Request, state: StateDep) -> Response:
        """Check the key; a client's key opens the portal, the operator key the clients page."""
        if not same_origin(request):
            return render(request, "login.html", {"error": "Cross-site sign-in refused."}, 403)
        key = form_field(await request.body(), "api_key")
        client = await run_in_threadpool(_client_of, state, key)
        if client is not None:
            target = "/portal"
        elif key and _is_operator_key(state, key):
            target = "/operator/clients"
        else:
            error = "Unknown API key." if key else "Enter your API key."
            return render(request, "login.html", {"error": error}, 401)
        response = RedirectResponse(target, status.HTTP_303_SEE_OTHER, headers=SECURITY_HEADERS)
        set_key_cookie(response, request, key)
        return response

    @router.post("/portal/logout")
    def logout() -> RedirectResponse:
        """Forget the key in this browser."""
        response = _to_login()
        clear_key_cookie(response)
        return response

    @router.get("/portal", response_model=None)
    def portal(request: Request, state: StateDep) -> Response:
        """The customer's page: buy modules, orders with live status, devices."""
        key = presented_key(request)
        with state.sessions() as session:
            client = repo.client_for_api_key(session, key) if key else None
            if client is None:
                return _to_login()
            orders = [OrderOut.of(o) for o in repo.list_orders(session, client, limit=50)]
            devices = [DeviceOut.of(d) for d in repo.list_devices(session, client, limit=500)]
        return render(
            request,
            "portal.html",
            {
                "client": client,
                "orders": orders,
                "devices": devices,
                "products": PRODUCTS,
                "environments": get_args(Stage),
                "archtypes": get_args(Archtype),
                "hardware": get_args(Hardware),
            },
        )

    @router.get("/operator/clients", response_model=None)
    def clients(request: Request, state: StateDep) -> Response:
        """The operator's list of every client, its products, hardware, status and trace_id."""
        try:
            require_operator(request, state)
        except HTTPException:
            return _to_login()
        with state.sessions() as session:
            rows = [ClientRow.of(row) for row in repo.client_overview(session)]
        return render(request, "clients.html", {"clients": rows})

    return router
