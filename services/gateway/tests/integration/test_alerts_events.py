"""Triggers and delivery outcomes from the real topics: the alert's history, its status, and a
live push to its owner's WebSocket connections only."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from tickwatch_common.events import NotificationStatus, Trigger, TriggerChannel
from tickwatch_common.kafka import kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import ALERTS_TRIGGERED, NOTIFICATIONS_STATUS
from tickwatch_devstack.infra import Stack
from tickwatch_devstack.testing import receive_json_until
from tickwatch_gateway.alerts.keys import ALERT_PUSH_POSITIONED

from .alerts_support import Client, alerts_client, create, eventually
from .conftest import MakeClient, signup

pytestmark = pytest.mark.integration


def trigger_for(alert: dict[str, Any], user_id: str, sequence: int = 1) -> Trigger:
    now = int(time.time() * 1000)
    return Trigger(
        event_id=str(uuid.uuid4()),
        alert_id=alert["id"],
        user_id=user_id,
        sequence=sequence,
        symbol=alert["symbol"],
        condition=alert["condition"],
        threshold=alert["target_price"],
        price="70001.5",
        ts_event=now - 5,
        triggered_at=now,
        channels=[
            TriggerChannel(type="email", to="a@example.com"),
            TriggerChannel(type="webhook", url="https://93.184.216.34/", secret="whsec_x"),
        ],
        note=alert["note"],
    )


def status_for(trigger: Trigger, channel: str, status: str, attempts: int) -> NotificationStatus:
    return NotificationStatus(
        event_id=trigger.event_id,
        alert_id=trigger.alert_id,
        user_id=trigger.user_id,
        channel=channel,  # type: ignore[arg-type]
        status=status,  # type: ignore[arg-type]
        attempts=attempts,
        detail=f"{status} after {attempts}",
        ts=int(time.time() * 1000) + attempts,
    )


async def user_id_of(client: Client, headers: dict[str, str]) -> str:
    resp = await client.get("/api/v1/auth/me", headers=headers)
    return str((await resp.json())["id"])


async def test_triggers_and_statuses_show_up_in_the_alert_events(
    stack: Stack, make_client: MakeClient
) -> None:
    client = await alerts_client(make_client)
    alice = await signup(client)
    alert = await create(
        client,
        alice["headers"],
        channels=["email", "webhook"],
        webhook_url="https://93.184.216.34/h",
    )
    trigger = trigger_for(alert, await user_id_of(client, alice["headers"]))
    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    async with kafka_producer(settings) as publisher:
        for _ in range(2):  # a redelivered trigger is recorded once
            await publisher.publish(ALERTS_TRIGGERED, trigger, key=trigger.alert_id)
        for status in (
            status_for(trigger, "email", "sent", 1),
            status_for(trigger, "webhook", "retrying", 1),
            status_for(trigger, "webhook", "failed", 3),
            status_for(trigger, "webhook", "retrying", 2),  # late and stale: ignored
        ):
            await publisher.publish(NOTIFICATIONS_STATUS, status, key=status.event_id)
    events_path = f"/api/v1/alerts/{alert['id']}/events"

    async def settled() -> dict[str, Any] | None:
        resp = await client.get(events_path, headers=alice["headers"])
        body: dict[str, Any] = await resp.json()
        if body["total"] != 1:
            return None
        statuses = {d["channel"]: d["status"] for d in body["items"][0]["deliveries"]}
        return body if statuses == {"email": "sent", "webhook": "failed"} else None

    body = await eventually(settled, "trigger with both delivery outcomes", timeout_s=30)
    event = body["items"][0]
    assert (event["event_id"], event["sequence"], event["price"]) == (
        trigger.event_id,
        1,
        "70001.5",
    )
    webhook = next(d for d in event["deliveries"] if d["channel"] == "webhook")
    assert (webhook["attempts"], webhook["detail"]) == (3, "failed after 3")
    resp = await client.get(f"/api/v1/alerts/{alert['id']}", headers=alice["headers"])
    after = await resp.json()
    assert (after["status"], after["trigger_count"]) == ("triggered", 1)
    assert after["triggered_at"] is not None
    # The list answer, cached before, shows the change too.
    resp = await client.get("/api/v1/alerts", headers=alice["headers"])
    assert (await resp.json())["items"][0]["status"] == "triggered"


async def test_the_owner_receives_the_trigger_live_and_nobody_else(
    stack: Stack, make_client: MakeClient
) -> None:
    client = await alerts_client(make_client)
    alice, bob = await signup(client), await signup(client)
    alert = await create(client, alice["headers"])
    sockets = {}
    for name, user in (("alice", alice), ("bob", bob)):
        ws = await client.ws_connect("/ws")
        await ws.send_json({"op": "subscribe", "channels": ["alerts"]})
        assert "authenticate" in (await receive_json_until(ws, lambda b: "op" in b))["error"]
        await ws.send_json({"op": "auth", "token": user["access_token"]})
        await receive_json_until(ws, lambda b: b.get("op") == "authenticated")
        await ws.send_json({"op": "subscribe", "channels": ["alerts"]})
        await receive_json_until(ws, lambda b: b.get("op") == "subscribed")
        sockets[name] = ws
    positioned = client.server.app[ALERT_PUSH_POSITIONED]
    await eventually(lambda: _true(positioned.is_set()), "alert push positioned")

    trigger = trigger_for(alert, await user_id_of(client, alice["headers"]))
    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    async with kafka_producer(settings) as publisher:
        await publisher.publish(ALERTS_TRIGGERED, trigger, key=trigger.alert_id)

    got = await receive_json_until(sockets["alice"], lambda b: b.get("channel") == "alerts")
    data = got["data"]
    assert (data["event_id"], data["alert_id"], data["price"]) == (
        trigger.event_id,
        alert["id"],
        "70001.5",
    )
    assert "channels" not in data  # addresses and secrets stay server-side
    # Bob's socket answers a ping without any alert before it.
    await sockets["bob"].send_json({"op": "ping"})
    reply = await receive_json_until(sockets["bob"], lambda b: True)
    assert reply == {"op": "pong"}
    for ws in sockets.values():
        await ws.close()


async def _true(value: bool) -> bool:
    return value
