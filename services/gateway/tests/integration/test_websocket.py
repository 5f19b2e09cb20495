"""A WebSocket client receives ticks and candles published to the real broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient
from tickwatch_common.events import Candle
from tickwatch_common.kafka import kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import CANDLES, TICKS
from tickwatch_devstack.infra import Stack
from tickwatch_devstack.testing import receive_json_until, replay_tick

from .conftest import signup

Client = TestClient[Any, Any]


async def wait_ready(client: Client) -> None:
    deadline = time.monotonic() + 30
    while (await client.get("/ready")).status != 200:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_subscribers_receive_published_ticks_and_candles(
    stack: Stack, client: Client
) -> None:
    await wait_ready(client)
    exact = await client.ws_connect("/ws")
    wild = await client.ws_connect("/ws")
    await exact.send_json(
        {"op": "subscribe", "channels": ["prices:btcusdt", "candles:BTC-USDT:1m"]}
    )
    reply = await receive_json_until(exact, lambda b: b.get("op") == "subscribed")
    assert reply["channels"] == ["prices:BTC-USDT", "candles:BTC-USDT:1m"]
    await wild.send_json({"op": "subscribe", "channels": ["prices:*"]})
    await receive_json_until(wild, lambda b: b.get("op") == "subscribed")

    now = int(time.time() * 1000) + 50_000_000
    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    async with kafka_producer(settings) as publisher:
        await publisher.publish(TICKS, replay_tick("BTC-USDT", "71000.5", now), key="BTC-USDT")
        await publisher.publish(TICKS, replay_tick("ETH-USDT", "3900.25", now), key="ETH-USDT")
        await publisher.publish(
            CANDLES,
            Candle(
                symbol="BTC-USDT",
                source="replay",
                interval="1m",
                open_time=60_000 * 100,
                close_time=60_000 * 101 - 1,
                open="1",
                high="2",
                low="0.5",
                close="1.5",
                volume="10",
                closed=True,
            ),
            key="BTC-USDT",
        )

    # Ticks and candles are different topics: either may arrive first.
    latest: dict[str, Any] = {}

    def both_seen(body: dict[str, Any]) -> bool:
        latest[body.get("channel", "")] = body.get("data")
        price = latest.get("prices:BTC-USDT") or {}
        return price.get("price") == "71000.5" and "candles:BTC-USDT:1m" in latest

    await receive_json_until(exact, both_seen)
    assert latest["candles:BTC-USDT:1m"]["close"] == "1.5"
    eth = await receive_json_until(wild, lambda b: b.get("channel") == "prices:ETH-USDT")
    assert eth["data"]["price"] == "3900.25"
    await exact.close()
    await wild.close()


async def test_protocol_errors_auth_and_limits(make_client: Any) -> None:
    client = await make_client(ws_max_subscriptions=2)
    user = await signup(client)
    ws = await client.ws_connect("/ws")
    await ws.send_str("not json")
    assert (await ws.receive_json(timeout=5))["op"] == "error"
    await ws.send_json({"op": "subscribe", "channels": ["prices:NOPE-USD"]})
    assert "unknown symbol" in (await ws.receive_json(timeout=5))["error"]
    await ws.send_json({"op": "subscribe", "channels": ["alerts"]})
    assert "authenticate" in (await ws.receive_json(timeout=5))["error"]
    await ws.send_json({"op": "auth", "token": "forged.token.value"})
    assert (await ws.receive_json(timeout=5))["op"] == "error"
    await ws.send_json({"op": "auth", "token": user["access_token"]})
    assert (await ws.receive_json(timeout=5))["op"] == "authenticated"
    await ws.send_json({"op": "subscribe", "channels": ["alerts", "portfolio", "prices:*"]})
    assert "at most 2" in (await ws.receive_json(timeout=5))["error"]
    await ws.send_json({"op": "subscribe", "channels": ["alerts"]})
    assert (await ws.receive_json(timeout=5))["op"] == "subscribed"
    await ws.send_json({"op": "ping"})
    assert (await ws.receive_json(timeout=5))["op"] == "pong"
    await ws.send_str("x" * 10_000)  # over WS_MAX_MESSAGE_BYTES: the server closes
    msg = await ws.receive(timeout=5)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
    await ws.close()


async def closed_with(ws: Any, timeout_s: float = 20) -> str:
    """Read until the server closes; the error it sent before closing."""
    error = ""
    async with asyncio.timeout(timeout_s):
        while True:
            msg = await ws.receive()
            if msg.type == WSMsgType.TEXT and '"error"' in msg.data:
                error = msg.json()["error"]
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                return error


async def test_logout_ends_the_logins_sockets_on_every_replica(make_client: Any) -> None:
    shared = {"redis_prefix": f"t-{uuid.uuid4().hex[:10]}:", "ws_session_check_s": 0.2}
    here, there = await make_client(**shared), await make_client(**shared)
    user, other = await signup(here), await signup(here)
    by_op = await here.ws_connect("/ws")  # authenticated with {"op": "auth"}
    await by_op.send_json({"op": "auth", "token": user["access_token"]})
    assert (await by_op.receive_json(timeout=5))["op"] == "authenticated"
    by_header = await there.ws_connect("/ws", headers=user["headers"])  # at the upgrade
    bystander = await there.ws_connect("/ws", headers=other["headers"])
    for ws in (by_op, by_header, bystander):
        await ws.send_json({"op": "subscribe", "channels": ["alerts"]})
        assert (await ws.receive_json(timeout=5))["op"] == "subscribed"

    resp = await here.post("/api/v1/auth/logout", headers=user["headers"])
    assert resp.status == 204

    assert await closed_with(by_op) == "session ended: login revoked"
    assert await closed_with(by_header) == "session ended: login revoked"
    await bystander.send_json({"op": "ping"})  # another user's login is untouched
    assert (await bystander.receive_json(timeout=5))["op"] == "pong"
    await bystander.close()


async def test_a_socket_ends_when_its_access_token_expires(make_client: Any) -> None:
    client = await make_client(access_token_ttl_s=2, ws_session_check_s=0.2)
    user = await signup(client)
    ws = await client.ws_connect("/ws")
    await ws.send_json({"op": "auth", "token": user["access_token"]})
    assert (await ws.receive_json(timeout=5))["op"] == "authenticated"
    assert await closed_with(ws) == "session ended: access token expired"
