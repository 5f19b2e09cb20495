"""The WebSocket ``portfolio`` channel: a valuation from the real topic reaches its owner's
socket (after ``auth``) and nobody else's; a burst is conflated to the latest value."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
from tickwatch_common.events import HoldingValue, Valuation
from tickwatch_common.kafka import kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import PORTFOLIO_VALUATIONS
from tickwatch_devstack.infra import Stack
from tickwatch_devstack.testing import receive_json_until, wait_until
from tickwatch_gateway.portfolio.keys import VALUATIONS_POSITIONED

from .conftest import MakeClient, signup

pytestmark = pytest.mark.integration


def valuation(user_id: str, price: str) -> Valuation:
    quantity = Decimal("2")
    value = quantity * Decimal(price)
    return Valuation(
        user_id=user_id,
        total_value=str(Decimal("9800") + value),  # type: ignore[arg-type]
        cash="9800",  # type: ignore[arg-type]
        holdings=[
            HoldingValue(
                symbol="BTC-USDT",
                quantity=str(quantity),  # type: ignore[arg-type]
                price=price,  # type: ignore[arg-type]
                value=str(value),  # type: ignore[arg-type]
                unrealized_pnl=str(value - Decimal("200")),  # type: ignore[arg-type]
            )
        ],
        ts=int(time.time() * 1000),
    )


async def test_the_owner_sees_their_valuation_live_and_nobody_else(
    stack: Stack, make_client: MakeClient
) -> None:
    client = await make_client()
    alice, bob = await signup(client), await signup(client)
    sockets: dict[str, Any] = {}
    for name, user in (("alice", alice), ("bob", bob)):
        ws = await client.ws_connect("/ws")
        await ws.send_json({"op": "subscribe", "channels": ["portfolio"]})
        assert "authenticate" in (await receive_json_until(ws, lambda b: "op" in b))["error"]
        await ws.send_json({"op": "auth", "token": user["access_token"]})
        await receive_json_until(ws, lambda b: b.get("op") == "authenticated")
        await ws.send_json({"op": "subscribe", "channels": ["portfolio"]})
        await receive_json_until(ws, lambda b: b.get("op") == "subscribed")
        sockets[name] = ws
    positioned = client.server.app[VALUATIONS_POSITIONED]
    await wait_until(positioned.is_set, 30, "valuation push positioned")

    me = await client.get("/api/v1/auth/me", headers=alice["headers"])
    alice_id = str((await me.json())["id"])
    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    async with kafka_producer(settings) as publisher:
        for price in ("100", "105", "110"):
            await publisher.publish(PORTFOLIO_VALUATIONS, valuation(alice_id, price), key=alice_id)

    def last_price(body: dict[str, Any]) -> bool:
        return body.get("channel") == "portfolio" and body["data"]["holdings"][0]["price"] == "110"

    got = await receive_json_until(sockets["alice"], last_price)
    data = got["data"]
    assert data["user_id"] == alice_id
    assert Decimal(data["holdings"][0]["unrealized_pnl"]) == Decimal("20")
    assert Decimal(data["total_value"]) == Decimal("10020")
    # Bob's socket answers a ping with nothing of Alice's before it.
    await sockets["bob"].send_json({"op": "ping"})
    assert await receive_json_until(sockets["bob"], lambda b: True) == {"op": "pong"}
    for ws in sockets.values():
        await ws.close()
