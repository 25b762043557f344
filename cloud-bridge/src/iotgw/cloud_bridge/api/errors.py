"""Error bodies: every 4xx is JSON; a validation error names each field it rejects."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError


def field_errors(errors: list[Any], location: str | None = None) -> list[dict[str, str]]:
    """`[{"field": "quantity", "location": "body", "message": "..."}]` from pydantic errors."""
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        where = location
        if where is None and loc and loc[0] in {"body", "query", "path", "header", "cookie"}:
            where, loc = loc[0], loc[1:]
        out.append(
            {
                "field": ".".join(loc) or "<root>",
                "location": where or "body",
                "message": str(err.get("msg", "invalid")),
            }
        )
    return out


def validation_response(errors: list[dict[str, str]]) -> JSONResponse:
    """422 naming the fields."""
    names = ", ".join(sorted({e["field"] for e in errors}))
    return JSONResponse(
        status_code=422, content={"detail": f"invalid fields: {names}", "errors": errors}
    )


def install(app: FastAPI) -> None:
    """Register the handlers on `app`."""

    async def on_request_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return validation_response(field_errors(list(exc.errors())))

    async def on_model_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ValidationError)
        return validation_response(field_errors(list(exc.errors(include_url=False)), "body"))

    app.add_exception_handler(RequestValidationError, on_request_error)
    app.add_exception_handler(ValidationError, on_model_error)
