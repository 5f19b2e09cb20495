"""Errors as ``application/problem+json`` (RFC 9457), and request validation that produces them.

Every error the gateway answers goes through :func:`problem`: raised ``HTTPException``s from
aiohttp (404 and 405 from the router, 413 from the body limit) are turned into problems by
:func:`problem_for` (which the edge middleware calls), pydantic validation errors become 422
with the field at fault.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any, TypeVar

import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"
M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY = web.AppKey("max_body_bytes", int)


class ProblemError(web.HTTPException):
    """An error with a problem body; raise it anywhere below the middleware."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        self.status_code = status
        super().__init__(headers=headers, reason=HTTPStatus(status).phrase)
        self.detail = detail
        self.title = title
        self.extensions = extensions


def problem(
    status: int,
    detail: str = "",
    *,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> web.Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail or HTTPStatus(status).description,
        **extensions,
    }
    resp = web.Response(status=status, body=json.dumps(body).encode(), content_type=PROBLEM_JSON)
    resp.headers.update(headers or {})
    return resp


def validation_problem(exc: ValidationError, where: str) -> ProblemError:
    errors = [
        {
            "field": ".".join(str(p) for p in err["loc"]) or where,
            "in": where,
            "message": err["msg"],
        }
        for err in exc.errors(include_url=False, include_input=False)
    ]
    first = errors[0]["field"] if errors else where
    return ProblemError(422, f"invalid {where}: {first}", errors=errors)


_SKIP_HEADERS = {"content-type", "content-length"}


def problem_for(request: web.Request, exc: Exception) -> web.Response:
    """The problem answer for what a handler raised. A raised answer below 400 (a redirect, a
    304) is not an error: it is raised again as it is. Called by the edge middleware."""
    if isinstance(exc, ProblemError):
        return problem(
            exc.status,
            exc.detail,
            title=exc.title,
            headers={k: v for k, v in exc.headers.items() if k.lower() not in _SKIP_HEADERS},
            **exc.extensions,
        )
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        headers = {k: v for k, v in exc.headers.items() if k.lower() not in _SKIP_HEADERS}
        detail = ""
        if exc.status == 405 and isinstance(exc, web.HTTPMethodNotAllowed):
            detail = f"{request.method} is not allowed here; allowed: {', '.join(sorted(exc.allowed_methods))}"
        elif exc.status == 404:
            detail = f"no resource at {request.path}"
        elif exc.status == 413:
            detail = f"request body larger than {request.app[MAX_BODY]} bytes"
        return problem(exc.status, detail, headers=headers)
    if isinstance(exc, ValidationError):  # a model validated outside parse_body/parse_query
        err = validation_problem(exc, "body")
        return problem(422, err.detail, errors=err.extensions["errors"])
    log.exception("unhandled_error", path=request.path, method=request.method)
    return problem(500, "internal error; the request id identifies it in the logs")


async def parse_body(request: web.Request, model: type[M]) -> M:
    """Validate a JSON body: 415 for another media type, 413 over the limit, 422 when invalid."""
    if request.content_type != "application/json":
        raise ProblemError(
            415,
            f"expected application/json, got {request.content_type or 'nothing'}",
        )
    limit = request.app[MAX_BODY]
    if request.content_length is not None and request.content_length > limit:
        raise ProblemError(413, f"request body larger than {limit} bytes")
    raw = await request.read()
    try:
        return model.model_validate_json(raw or b"")
    except ValidationError as exc:
        raise validation_problem(exc, "body") from None


_EMPTY: dict[type[BaseModel], BaseModel] = {}


def parse_query(request: web.Request, model: type[M]) -> M:
    if not request.query_string:  # the hot path: the defaults, validated once
        empty = _EMPTY.get(model)
        if empty is None:
            empty = _EMPTY[model] = _validate_query(model, {})
        return empty  # type: ignore[return-value]
    data: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        data[key] = values[0] if len(values) == 1 else values
    return _validate_query(model, data)


def _validate_query(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(exc, "query") from None
