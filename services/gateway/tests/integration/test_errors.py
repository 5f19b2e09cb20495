"""Every error is application/problem+json naming what is wrong."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

Client = TestClient[Any, Any]
PROBLEM = "application/problem+json"


async def test_unknown_route_is_a_404_problem(client: Client) -> None:
    resp = await client.get("/api/v1/nothing-here")
    assert resp.status == 404
    assert resp.content_type == PROBLEM
    body = await resp.json()
    assert body["status"] == 404 and body["title"] == "Not Found"
    assert resp.headers["X-Request-ID"]


async def test_wrong_method_is_a_405_problem_with_allow(client: Client) -> None:
    resp = await client.delete("/api/v1/markets")
    assert resp.status == 405
    assert resp.content_type == PROBLEM
    assert "GET" in resp.headers["Allow"]


async def test_wrong_media_type_is_415(client: Client) -> None:
    resp = await client.post(
        "/api/v1/auth/register", data="email=a", headers={"Content-Type": "text/plain"}
    )
    assert resp.status == 415
    assert resp.content_type == PROBLEM


async def test_oversized_body_is_413(client: Client) -> None:
    big = '{"email": "a@b.co", "password": "' + "x" * 70_000 + '"}'
    resp = await client.post(
        "/api/v1/auth/register", data=big, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 413
    assert resp.content_type == PROBLEM


async def test_invalid_body_is_422_naming_the_field(client: Client) -> None:
    resp = await client.post("/api/v1/auth/register", json={"email": "a@b.co", "password": "short"})
    assert resp.status == 422
    body = await resp.json()
    assert [e["field"] for e in body["errors"]] == ["password"]
    resp = await client.post(
        "/api/v1/auth/register", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 422


async def test_invalid_query_is_422_naming_the_parameter(client: Client) -> None:
    resp = await client.get("/api/v1/prices/BTC-USDT?source=nasdaq")
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["field"] == "source"


async def test_unknown_symbol_is_404_with_known_ones(client: Client) -> None:
    resp = await client.get("/api/v1/prices/DOGE-EUR")
    assert resp.status == 404
    body = await resp.json()
    assert body["known_symbols"] == ["BTC-USDT", "ETH-USDT"]
    assert "BTC-USDT" in body["detail"]


async def test_request_id_is_echoed(client: Client) -> None:
    resp = await client.get("/api/v1/markets", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["X-Request-ID"] == "abc-123"


async def test_cors_preflight_and_simple_requests(make_client: Any) -> None:
    client = await make_client(cors_origins="https://app.example")
    resp = await client.options(
        "/api/v1/markets",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    resp = await client.get("/api/v1/markets", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers
