"""The edge of every request, in one layer: its id, CORS, admission (authentication and rate
limits, :func:`tickwatch_gateway.auth.admit`) and errors answered as problems.

One middleware rather than four: each aiohttp middleware is a coroutine layer on every request
(plus the one aiohttp adds whenever there are any), about 1.5 % of the cached price route each.
The parts stay separate functions. The request id reaches log lines through one ContextVar
(:data:`tickwatch_common.logging.CURRENT_REQUEST_ID`), cheaper than structlog's bind and reset.

Every request ends in one ``request`` line (:func:`log_request`): method, the matched route's
template (never the raw path or its query, where ids and secrets travel), status, duration, the
request id and who was admitted. Nothing of a header or a body is logged, so a token, a password
or an API key cannot reach the logs through it. The ops probes log at debug: they come every few
seconds and say nothing an operator reads. The same place counts the request and its duration
(``tickwatch_gateway_http_requests_total``, ``tickwatch_gateway_http_request_seconds``) by
method, route template and status, so the labels stay as few as the routes.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import Counter, Histogram
from tickwatch_common.logging import CURRENT_REQUEST_ID

from tickwatch_gateway.http.problems import Handler, ProblemError, problem_for
from tickwatch_gateway.http.ratelimit import Decision

REQUEST_ID = "X-Request-ID"
REQUEST_ID_KEY = web.RequestKey("request_id", str)
_SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

MAX_TARGET_BYTES = 8192
"""The longest path and query answered; a longer one gets a 414 problem. The HTTP parser's own
limit (``PARSER_LINE_BYTES``, set where the server is made) is kept higher so that these
requests reach this check instead of the parser's plain-text 400."""
PARSER_LINE_BYTES = 65536

_PROCESS = uuid.uuid4().hex[:12]
_SEQUENCE = itertools.count(1)

_LOG = structlog.get_logger("tickwatch_gateway.http")
_PROBES = frozenset({"/health", "/ready"})

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""The methods a metric names; any other (a client may send any token) is ``other``."""

HTTP_REQUESTS = Counter(
    "tickwatch_gateway_http_requests_total",
    "Requests answered, by method, route template (unmatched when none) and status (none when"
    " the client went away first)",
    ["method", "route", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "tickwatch_gateway_http_request_seconds",
    "Time from a request reaching the edge to its answer, by method and route template",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)


@runtime_checkable
class Identified(Protocol):
    """What admission leaves in the request for the caller it authenticated (the accounts'
    ``Principal``, which the edge may not import): its ``identity``, ``user:<id>`` or
    ``key:<api key id>``, the only part of it the request line carries."""

    @property
    def identity(self) -> str: ...


def principal_id(request: web.Request) -> str | None:
    """The identity of whoever admission authenticated for this request; None when nobody."""
    for value in request.values():
        if isinstance(value, Identified):
            return value.identity
    return None


def route_of(request: web.Request) -> str | None:
    """The matched route's template (``/api/v1/alerts/{id}``); None when no route matched."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


def log_request(request: web.Request, rid: str, status: int | None, started: float) -> None:
    """The request's one line and its metrics; ``status`` None when no answer was sent (the
    client went away, or the server stopped, before the handler answered)."""
    route = route_of(request)
    elapsed = time.perf_counter() - started
    method = request.method if request.method in _METHODS else "other"
    template = route if route is not None else "unmatched"
    HTTP_REQUESTS.labels(method, template, str(status) if status else "none").inc()
    HTTP_REQUEST_SECONDS.labels(method, template).observe(elapsed)
    log = _LOG.debug if route in _PROBES else _LOG.info
    log(
        "request",
        method=request.method,
        route=route,
        status=status,
        duration_ms=round(elapsed * 1000, 2),
        request_id=rid,
        principal_id=principal_id(request),
    )


def request_id(request: web.Request) -> str:
    """The caller's X-Request-ID when sane, else this process's random prefix and a sequence
    number: unique, and cheaper than a uuid4 per request on the hot path."""
    given = request.headers.get(REQUEST_ID)
    return given if given is not None and _SANE_ID.match(given) else f"{_PROCESS}-{next(_SEQUENCE)}"


class Cors:
    """Which origins may call, and the headers each answer to them carries."""

    METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
    ALLOW_HEADERS = "Authorization, Content-Type, X-API-Key, X-Request-ID"
    EXPOSE = (
        "ETag, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, X-Request-ID"
    )

    def __init__(self, origins: list[str]) -> None:
        self.allow_all = "*" in origins
        self.allowed = set(origins)

    def headers_for(self, request: web.Request) -> dict[str, str] | None:
        """The CORS headers for this request's answer; None when it has no allowed Origin."""
        origin = request.headers.get("Origin")
        if origin is None or not (self.allow_all or origin in self.allowed):
            return None
        return {
            "Access-Control-Allow-Origin": "*" if self.allow_all else origin,
            "Vary": "Origin",
        }

    def preflight(self, request: web.Request, headers: dict[str, str]) -> web.Response | None:
        """The answer to a preflight request, which never reaches a handler."""
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return None
        return web.Response(
            status=204,
            headers=headers
            | {
                "Access-Control-Allow-Methods": self.METHODS,
                "Access-Control-Allow-Headers": self.ALLOW_HEADERS,
                "Access-Control-Max-Age": "600",
            },
        )


Admit = Callable[[web.Request], Awaitable[Decision | None]]


def edge_middleware(cors_origins: list[str], admit: Admit) -> Middleware:
    """``admit`` decides whether the request may go on (raising the problem when not) and
    gives the rate-limit decision whose headers every answer carries, errors included."""
    cors = Cors(cors_origins) if cors_origins else None

    @web.middleware
    async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        rid = request[REQUEST_ID_KEY] = request_id(request)
        status: int | None = None
        try:
            cors_headers = cors.headers_for(request) if cors is not None else None
            response: web.StreamResponse | None = None
            if cors is not None and cors_headers is not None:
                response = cors.preflight(request, cors_headers)
            decision: Decision | None = None
            if response is None:
                token = CURRENT_REQUEST_ID.set(rid)
                try:
                    if len(request.raw_path) > MAX_TARGET_BYTES:
                        raise _too_long(request)
                    unrouted = request.match_info.http_exception
                    if isinstance(unrouted, web.HTTPMethodNotAllowed):
                        raise unrouted  # the method is wrong whoever asks: 405 before any 401
                    decision = await admit(request)
                    response = await handler(request)
                except Exception as exc:  # problem_for logs what was not expected
                    try:
                        response = problem_for(request, exc)
                    except web.HTTPException as passed:  # a 304 or a redirect, raised on
                        status = passed.status
                        passed.headers[REQUEST_ID] = rid
                        if decision is not None:
                            decision.apply(passed.headers)
                        raise
                finally:
                    CURRENT_REQUEST_ID.reset(token)
            status = response.status
            if not response.prepared:
                headers = response.headers
                headers[REQUEST_ID] = rid
                if decision is not None:
                    decision.apply(headers)
                if cors_headers is not None:
                    headers.update(cors_headers)
                    headers["Access-Control-Expose-Headers"] = Cors.EXPOSE
            return response
        finally:
            log_request(request, rid, status, started)

    return edge


def _too_long(request: web.Request) -> ProblemError:
    url = request.rel_url
    where = "query" if len(url.raw_query_string) >= len(url.raw_path) else "path"
    return ProblemError(
        414,
        f"the request's path and query are {len(request.raw_path)} bytes; at most "
        f"{MAX_TARGET_BYTES} are accepted",
        errors=[{"field": where, "in": where, "message": "too long"}],
    )
