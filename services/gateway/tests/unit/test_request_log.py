"""The edge logs one line per request: method, route template, status, duration, request id and
principal, and nothing a caller sent as a secret (tokens, API keys, passwords, query strings);
it counts and times each request by method, route template and status."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY
from tickwatch_common.logging import configure_logging
from tickwatch_gateway.accounts.admission import PRINCIPAL, Principal
from tickwatch_gateway.http import middleware
from tickwatch_gateway.http.middleware import edge_middleware
from tickwatch_gateway.http.problems import MAX_BODY
from tickwatch_gateway.http.ratelimit import Decision

TOKEN = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LWNsYWltcw.c2lnbmF0dXJlLXNlY3JldA"
API_KEY = "tw_live_k9-very-secret-api-key"
PASSWORD = "correct horse battery staple"
QUERY_SECRET = "sekrit-in-the-query"
SECRETS = (TOKEN, API_KEY, PASSWORD, QUERY_SECRET)


async def admit(request: web.Request) -> Decision | None:
    """Stands in for the accounts' admission: leaves the same Principal under the same key."""
    if request.headers.get("Authorization") == f"Bearer {TOKEN}":
        request[PRINCIPAL] = Principal("u-1", frozenset(), "jwt")
    elif request.headers.get("X-API-Key") == API_KEY:
        request[PRINCIPAL] = Principal("u-1", frozenset({"read"}), "api_key", key_id="k-9")
    return None


async def get_alert(request: web.Request) -> web.Response:
    return web.json_response({"id": request.match_info["id"]})


async def health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def login(request: web.Request) -> web.Response:
    body = await request.json()
    if body["password"] != PASSWORD:
        raise web.HTTPUnauthorized()
    return web.json_response({"access_token": TOKEN})


class Logs:
    def __init__(self, out: io.StringIO) -> None:
        self.out = out

    def text(self) -> str:
        return self.out.getvalue()

    def requests(self) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.text().splitlines()]
        return [line for line in lines if line["event"] == "request"]


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Logs]:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", root.handlers[:])
    monkeypatch.setattr(root, "level", root.level)
    configure_logging("gateway", "DEBUG")
    # A fresh proxy: the module's own may be cached against a configuration an earlier test made.
    monkeypatch.setattr(middleware, "_LOG", structlog.get_logger("tickwatch_gateway.http"))
    yield Logs(out)
    structlog.reset_defaults()


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    app = web.Application(middlewares=[edge_middleware([], admit)])
    app[MAX_BODY] = 1 << 16
    app.router.add_get("/api/v1/alerts/{id}", get_alert)
    app.router.add_post("/api/v1/auth/login", login)
    app.router.add_get("/health", health)
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_a_bearer_request_logs_its_route_status_duration_id_and_user_not_the_token(
    client: TestClient[Any, Any], logs: Logs
) -> None:
    resp = await client.get(
        f"/api/v1/alerts/a-123?token={QUERY_SECRET}",
        headers={"Authorization": f"Bearer {TOKEN}", "X-Request-ID": "req-7"},
    )
    assert resp.status == 200
    [line] = logs.requests()
    assert line["method"] == "GET"
    assert line["route"] == "/api/v1/alerts/{id}"
    assert line["status"] == 200
    assert line["duration_ms"] >= 0
    assert line["request_id"] == "req-7"
    assert line["principal_id"] == "user:u-1"
    assert line["service"] == "gateway"
    assert "a-123" not in logs.text()
    assert not [secret for secret in SECRETS if secret in logs.text()]


async def test_an_api_key_request_logs_the_key_id_not_the_key(
    client: TestClient[Any, Any], logs: Logs
) -> None:
    resp = await client.get("/api/v1/alerts/a-1", headers={"X-API-Key": API_KEY})
    assert resp.status == 200
    [line] = logs.requests()
    assert line["principal_id"] == "key:k-9"
    assert resp.headers["X-Request-ID"] == line["request_id"]
    assert API_KEY not in logs.text()


async def test_a_login_logs_its_status_never_the_password_or_the_token_it_returns(
    client: TestClient[Any, Any], logs: Logs
) -> None:
    ok = await client.post("/api/v1/auth/login", json={"email": "a@b.c", "password": PASSWORD})
    refused = await client.post("/api/v1/auth/login", json={"email": "a@b.c", "password": "nope"})
    assert (ok.status, refused.status) == (200, 401)
    assert [(line["route"], line["status"], line["principal_id"]) for line in logs.requests()] == [
        ("/api/v1/auth/login", 200, None),
        ("/api/v1/auth/login", 401, None),
    ]
    assert not [secret for secret in SECRETS if secret in logs.text()]


async def test_an_unrouted_path_logs_no_route_and_a_probe_logs_at_debug(
    client: TestClient[Any, Any], logs: Logs
) -> None:
    assert (await client.get(f"/nowhere/{QUERY_SECRET}")).status == 404
    assert (await client.get("/health")).status == 200
    assert [(line["route"], line["status"], line["level"]) for line in logs.requests()] == [
        (None, 404, "info"),
        ("/health", 200, "debug"),
    ]
    assert QUERY_SECRET not in logs.text()


REQUESTS = "tickwatch_gateway_http_requests_total"


def _counts() -> tuple[float, ...]:
    """Requests counted for the alert route (200), unmatched (404 by GET and by an odd method)
    and the alert route's timed requests."""
    route = "/api/v1/alerts/{id}"
    return tuple(
        REGISTRY.get_sample_value(name, labels) or 0.0
        for name, labels in (
            (REQUESTS, {"method": "GET", "route": route, "status": "200"}),
            (REQUESTS, {"method": "GET", "route": "unmatched", "status": "404"}),
            (REQUESTS, {"method": "other", "route": "unmatched", "status": "404"}),
            ("tickwatch_gateway_http_request_seconds_count", {"method": "GET", "route": route}),
        )
    )


async def test_each_request_is_counted_and_timed_by_method_route_template_and_status(
    client: TestClient[Any, Any],
) -> None:
    before = _counts()
    assert (await client.get("/api/v1/alerts/a-1")).status == 200
    assert (await client.get("/api/v1/alerts/a-2")).status == 200
    assert (await client.get(f"/nowhere/{QUERY_SECRET}")).status == 404
    assert (await client.request("PROPFIND", "/nowhere")).status == 404
    assert [after - b for after, b in zip(_counts(), before, strict=True)] == [2, 1, 1, 2]
