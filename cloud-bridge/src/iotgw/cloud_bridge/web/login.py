"""Browser sign-in: the API key, entered once, for the browser session.

Decision: the login form posts the key (a client's key or the operator key) to the server, which
checks it and sets `iotgw_api_key`, HttpOnly, SameSite=Strict, Secure over HTTPS, a session
cookie gone when the browser closes. The api accepts that cookie for reads only (page loads and
the EventSource of an order's status, which cannot send headers): a browser attaches cookies to
cross-site form posts, so a cookie must never authorise a write. For writes (buying), the login
page's script also keeps the key in the tab's sessionStorage and the portal's script sends it as
`Authorization: Bearer`, which no other site can make the browser send. The cost: script
running in the page could read the key, so the pages allow no inline script and no other origin
(Content-Security-Policy) and every value is escaped by Jinja2's autoescaping. A new tab has the
cookie but not the sessionStorage key: it can read, and asks to sign in again before buying. The
login post itself is checked against the Origin header (no cross-site sign-in).
"""

from __future__ import annotations

import urllib.parse

from fastapi import Request, Response

from iotgw.cloud_bridge.api.auth import COOKIE

MAX_FORM_BYTES = 4096


def form_field(body: bytes, name: str) -> str:
    """One field of an `application/x-www-form-urlencoded` body ('' when absent)."""
    fields = urllib.parse.parse_qs(body[:MAX_FORM_BYTES].decode(errors="replace"))
    values = fields.get(name, [""])
    return values[0].strip()


def same_origin(request: Request) -> bool:
    """False when the browser says the form was posted from another site."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urllib.parse.urlsplit(origin).netloc == request.headers.get("host", "")


def set_key_cookie(response: Response, request: Request, key: str) -> None:
    """Remember `key` for this browser session (HttpOnly, SameSite=Strict)."""
    response.set_cookie(
        COOKIE,
        key,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def clear_key_cookie(response: Response) -> None:
    """Forget the key."""
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
