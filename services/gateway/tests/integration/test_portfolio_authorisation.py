"""Who may call which portfolio route: every operation under ``/api/v1/portfolio`` that the
gateway's own ``/openapi.json`` lists (so a new route is covered the day it is added), through
the gateway to a real portfolio process.

- without credentials: 401 problem+json;
- an API key with only ``read``: every write (a route whose scope is not ``read``) 403, every read
  answered; a key with only ``portfolio:write`` cannot read;
- user B never sees or acts on user A's order or trade: a route naming A's order id answers B
  404 (not 403, not 200), B's lists hold nothing of A's;
- a ``user_id`` in a body is refused (422 naming the field) or ignored, in a query ignored: B
  sending A's id only ever touches B's own account. A's account is the same at the end.

One portfolio process, one gateway and one database for the module.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from tickwatch_common.events import Instrument
from tickwatch_common.kafka import kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import INSTRUMENTS, TICKS
from tickwatch_devstack.infra import Stack, create_database, free_port
from tickwatch_devstack.testing import replay_tick, service_running_off_loop, wait_until
from tickwatch_gateway.app import build_app

from .conftest import gateway_settings, signup

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]
PREFIX = "/api/v1/portfolio"
PROBLEM = "application/problem+json"
D = Decimal

VALID_BODIES: dict[str, dict[str, Any]] = {
    "OrderBody": {"side": "buy", "quantity": "1", "type": "limit", "limit_price": "10"},
    "TradeBody": {"side": "buy", "quantity": "0.1"},
    "CashFlowBody": {"amount": "1"},
}
"""A valid body per request schema (``symbol`` added where the schema has one)."""


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    scope: str
    body_schema: str | None


@dataclass
class User:
    id: str
    headers: dict[str, str]


@dataclass
class Setup:
    client: Client
    routes: list[Route]
    symbol: str
    alice: User
    bob: User
    order_id: str
    """Alice's resting limit buy."""
    trade_id: str
    """Alice's market buy's fill."""
    orders: set[str]
    """Every order of Alice's."""
    trades: set[str]
    """Every trade of Alice's."""


def _routes(document: dict[str, Any]) -> list[Route]:
    routes = []
    for path, operations in document["paths"].items():
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            continue
        for method, operation in operations.items():
            described = operation.get("description", "")
            scope = described.split("`")[1] if "scope" in described else ""
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            schema = body["schema"]["$ref"].rsplit("/", 1)[-1] if body else None
            routes.append(Route(method.upper(), path, scope, schema))
    return routes


def _body(setup: Setup, route: Route, **extra: Any) -> dict[str, Any] | None:
    if route.body_schema is None:
        return extra or None
    assert route.body_schema in VALID_BODIES, f"add a valid {route.body_schema} to VALID_BODIES"
    body = dict(VALID_BODIES[route.body_schema])
    if route.body_schema in ("OrderBody", "TradeBody"):
        body["symbol"] = setup.symbol
    return body | extra


def _theirs(setup: Setup, body: Any) -> list[Any]:
    """What of Alice's an answer shows: an order of hers (in a list, or as the answer) or a
    trade of hers. Orders, trades and cash flows each number from their own sequence, so an id
    is read as what its place says it is."""
    if not isinstance(body, dict):
        return []
    if "items" in body:
        return [item for item in body["items"] if _theirs(setup, item)]
    if "executed_at" in body:  # a trade
        return [body] if body["id"] in setup.trades or body["order_id"] in setup.orders else []
    if "side" in body:  # an order
        return [body] if body["id"] in setup.orders or body.get("trade_id") in setup.trades else []
    return []


def _target(route: Route, order_id: str) -> str:
    return route.path.replace("{id}", order_id)


async def _call(
    setup: Setup,
    route: Route,
    headers: dict[str, str] | None,
    *,
    order_id: str = "1",
    query: str = "",
    **extra: Any,
) -> tuple[int, str, Any]:
    url = _target(route, order_id) + (f"?{query}" if query else "")
    body = _body(setup, route, **extra)
    async with setup.client.request(route.method, url, json=body, headers=headers) as resp:
        text = await resp.text()
        parsed = await resp.json(content_type=None) if "json" in resp.content_type else text
        return resp.status, resp.content_type, parsed


async def _snapshot(setup: Setup, user: User) -> tuple[Any, ...]:
    """What a call could change in a user's account (not the marks of its holdings)."""
    client = setup.client
    view = await (await client.get(PREFIX, headers=user.headers)).json()
    orders = await (await client.get(f"{PREFIX}/orders?per_page=200", headers=user.headers)).json()
    trades = await (await client.get(f"{PREFIX}/trades?per_page=200", headers=user.headers)).json()
    return (
        view["cash"],
        view["reserved"],
        view["realized_pnl"],
        [(h["symbol"], h["quantity"]) for h in view["holdings"]],
        [(o["id"], o["status"]) for o in orders["items"]],
        [t["id"] for t in trades["items"]],
    )


async def _key(client: Client, user: User, scopes: list[str]) -> dict[str, str]:
    resp = await client.post(
        "/api/v1/api-keys", json={"name": "k", "scopes": scopes}, headers=user.headers
    )
    assert resp.status == 201, await resp.text()
    return {"X-API-Key": (await resp.json())["key"]}


async def _user(client: Client) -> User:
    login = await signup(client)
    me = await (await client.get("/api/v1/auth/me", headers=login["headers"])).json()
    return User(str(me["id"]), login["headers"])


@pytest.fixture(scope="module")
async def setup(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    server = stack.database_url.rsplit("/", 1)[0] + "/postgres"
    database = await create_database(server, f"t_{uuid.uuid4().hex[:12]}")
    secret = secrets.token_urlsafe(48)
    portfolio_port = free_port()
    symbol = f"Z{uuid.uuid4().hex[:6].upper()}-USDT"  # its own: other tests share the broker
    env = {
        **stack.env(),
        "DATABASE_URL": database,
        "INTERNAL_API_SECRET": secret,
        "PORTFOLIO_PORT": str(portfolio_port),
    }
    log = Path(tmp_path_factory.mktemp("authz")) / "portfolio.log"
    kafka = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    settings = gateway_settings(
        stack,
        database,
        symbols=f"BTC-USDT,{symbol}",
        portfolio_url=f"http://127.0.0.1:{portfolio_port}",
        internal_api_secret=secret,
    )
    async with (
        service_running_off_loop("portfolio", env, portfolio_port, log),
        kafka_producer(kafka, linger_ms=0) as publisher,
    ):
        client: Client = TestClient(TestServer(build_app(settings)))
        await client.start_server()
        try:
            base, quote = symbol.split("-")
            rules = Instrument(
                symbol=symbol,
                base=base,
                quote=quote,
                source="binance",
                step_size=D("0.001"),
                tick_size=D("0.01"),
                min_notional=D("1"),
                status="TRADING",
            )
            await publisher.publish(INSTRUMENTS, rules, key=symbol)
            document = await (await client.get("/openapi.json")).json()
            alice, bob = await _user(client), await _user(client)

            async def trade() -> Any:
                tick = replay_tick(symbol, "100.00", int(time.time() * 1000))
                await publisher.publish(TICKS, tick, key=symbol)
                order = {"symbol": symbol, "side": "buy", "quantity": "0.5"}
                resp = await client.post(f"{PREFIX}/trades", json=order, headers=alice.headers)
                return (await resp.json()) if resp.status == 201 else None

            filled: list[Any] = []

            async def bought() -> bool:
                filled.append(await trade())
                return filled[-1] is not None

            await wait_until(
                bought, 30, "Alice's market buy filled once rules and tick are in", interval_s=0.2
            )
            limit = {"symbol": symbol, "side": "buy", "quantity": "1", "type": "limit"}
            resp = await client.post(
                f"{PREFIX}/orders", json=limit | {"limit_price": "50"}, headers=alice.headers
            )
            assert resp.status == 201, await resp.text()
            resting = await resp.json()
            yield Setup(
                client,
                _routes(document),
                symbol,
                alice,
                bob,
                resting["id"],
                filled[-1]["trade_id"],
                {resting["id"], filled[-1]["id"]},
                {filled[-1]["trade_id"]},
            )
        finally:
            await client.close()


def test_the_document_lists_the_portfolio_routes_with_their_scopes(setup: Setup) -> None:
    listed = {(r.method, r.path.removeprefix(PREFIX)) for r in setup.routes}
    known = {
        ("GET", ""),
        ("POST", "/orders"),
        ("GET", "/orders"),
        ("DELETE", "/orders/{id}"),
        ("POST", "/trades"),
        ("GET", "/trades"),
        ("POST", "/deposits"),
        ("POST", "/withdrawals"),
        ("POST", "/reset"),
        ("GET", "/history"),
        ("GET", "/performance"),
    }
    assert known <= listed  # and any route added since is in the matrix too
    for route in setup.routes:
        assert route.scope in ("read", "portfolio:write"), route
        # Reads are GETs; everything else writes.
        assert (route.scope == "read") == (route.method == "GET"), route


async def test_every_route_needs_credentials(setup: Setup) -> None:
    for route in setup.routes:
        status, content_type, body = await _call(setup, route, None)
        assert (status, content_type) == (401, PROBLEM), (route, body)
        status, content_type, _ = await _call(setup, route, {"X-API-Key": "tw_deadbeef_nope"})
        assert (status, content_type) == (401, PROBLEM), route


async def test_a_read_key_cannot_write_and_a_write_key_cannot_read(setup: Setup) -> None:
    client, alice = setup.client, setup.alice
    read_key = await _key(client, alice, ["read"])
    write_key = await _key(client, alice, ["portfolio:write"])
    before = await _snapshot(setup, alice)
    for route in setup.routes:
        status, content_type, body = await _call(setup, route, read_key, order_id=setup.order_id)
        if route.scope == "read":
            assert status == 200, (route, body)
        else:
            assert (status, content_type) == (403, PROBLEM), (route, body)
            assert route.scope in body["detail"]
        if route.scope == "read":
            status, content_type, body = await _call(setup, route, write_key)
            assert (status, content_type) == (403, PROBLEM), (route, body)
    assert await _snapshot(setup, alice) == before


async def test_another_users_order_is_404_and_their_trades_invisible(setup: Setup) -> None:
    alice, bob = setup.alice, setup.bob
    before = await _snapshot(setup, alice)
    named = [r for r in setup.routes if "{id}" in r.path]
    assert named, "no portfolio route names an order"
    for route in named:
        for who in ("bearer", "api key"):
            headers = (
                bob.headers
                if who == "bearer"
                else await _key(setup.client, bob, ["read", "portfolio:write"])
            )
            status, content_type, body = await _call(setup, route, headers, order_id=setup.order_id)
            assert (status, content_type) == (404, PROBLEM), (route, who, body)
    for route in setup.routes:
        if route.method != "GET":
            continue
        status, _, body = await _call(setup, route, bob.headers)
        assert status == 200, (route, body)
        assert not _theirs(setup, body), (route, body)
    csv = await setup.client.get(f"{PREFIX}/trades", headers={**bob.headers, "Accept": "text/csv"})
    assert csv.status == 200 and csv.content_type == "text/csv"
    rows = [line.split(",") for line in (await csv.text()).splitlines()[1:]]
    assert not {r[0] for r in rows} & setup.trades and not {r[1] for r in rows} & setup.orders
    assert await _snapshot(setup, alice) == before
    assert dict(before[4])[setup.order_id] == "open"


async def test_a_user_id_in_a_body_or_query_never_acts_for_someone_else(setup: Setup) -> None:
    """Bob sends Alice's id every way he can; Alice's account does not move, and whatever Bob's
    calls did, they did to Bob's account."""
    alice, bob = setup.alice, setup.bob
    before = await _snapshot(setup, alice)
    for route in setup.routes:
        for query in (f"user_id={alice.id}", f"user_id={alice.id}&user={alice.id}"):
            status, _, body = await _call(
                setup, route, bob.headers, order_id=setup.order_id, query=query
            )
            if "{id}" in route.path:
                assert status == 404, (route, body)
            elif status == 422:
                assert any(e["field"] == "user_id" for e in body.get("errors", [])), body
            else:  # done for Bob (or refused by his own account's state)
                assert status in (200, 201, 409), (route, query, body)
                assert not _theirs(setup, body), (route, query, body)
        if route.method == "GET":
            continue
        status, _, body = await _call(
            setup, route, bob.headers, order_id=setup.order_id, user_id=alice.id
        )
        if "{id}" in route.path:
            assert status == 404, (route, body)
        elif route.body_schema is not None:
            assert status == 422, (route, body)
            assert [e["field"] for e in body["errors"]] == ["user_id"], body
        else:
            assert status in (200, 201, 409), (route, body)  # a body it does not read: ignored
    assert await _snapshot(setup, alice) == before
    asked = await setup.client.get(f"{PREFIX}?user_id={alice.id}", headers=bob.headers)
    shown = await asked.json()
    assert (await _snapshot(setup, bob))[:3] == (
        shown["cash"],
        shown["reserved"],
        shown["realized_pnl"],
    )
    bob_view = await (await setup.client.get(PREFIX, headers=bob.headers)).json()
    alice_view = await (await setup.client.get(PREFIX, headers=alice.headers)).json()
    assert bob_view != alice_view
    assert alice_view["holdings"] and alice_view["holdings"][0]["symbol"] == setup.symbol
