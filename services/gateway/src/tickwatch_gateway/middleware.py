"""Request ids and CORS, around everything else."""

from __future__ import annotations

import itertools
import re
import uuid

import structlog
from aiohttp import web

from tickwatch_gateway.problems import Handler

REQUEST_ID = "X-Request-ID"
REQUEST_ID_KEY = web.RequestKey("request_id", str)
_SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


_PROCESS = uuid.uuid4().hex[:12]
_SEQUENCE = itertools.count(1)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Take the caller's X-Request-ID when sane, else make one; log with it, answer with it.

    A made-up id is this process's random prefix and a sequence number: unique, and cheaper
    than a uuid4 per request on the hot path."""
    given = request.headers.get(REQUEST_ID)
    rid = given if given is not None and _SANE_ID.match(given) else f"{_PROCESS}-{next(_SEQUENCE)}"
    request[REQUEST_ID_KEY] = rid
    tokens = structlog.contextvars.bind_contextvars(request_id=rid)
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # e.g. a 304 or a redirect raised past the problems
        exc.headers[REQUEST_ID] = rid
        raise
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
    if not response.prepared:
        response.headers[REQUEST_ID] = rid
    return response


def cors_middleware(origins: list[str]) -> web.middleware:  # type: ignore[valid-type]
    allow_all = "*" in origins
    allowed = set(origins)
    methods = "GET, POST, PATCH, DELETE, OPTIONS"
    expose = (
        "ETag, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, X-Request-ID"
    )

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None or not (allow_all or origin in allowed):
            return await handler(request)
        headers = {
            "Access-Control-Allow-Origin": "*" if allow_all else origin,
            "Vary": "Origin",
        }
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            headers |= {
                "Access-Control-Allow-Methods": methods,
                "Access-Control-Allow-Headers": "Authorization, Content-Type, X-API-Key, X-Request-ID",
                "Access-Control-Max-Age": "600",
            }
            return web.Response(status=204, headers=headers)
        response = await handler(request)
        if not response.prepared:
            response.headers.update(headers)
            response.headers["Access-Control-Expose-Headers"] = expose
        return response

    return cors
