"""alerts.changes.v1 rebuilt from the gateway's tables: when the topic is recreated empty (a new
log), at start-up, and on demand; a deleted alert stays deleted, a fired once-alert stays
triggered, and a second reconcile sends nothing.

The topic is deleted and recreated on a private broker of this module: on the session's broker
it would pull the topic from under every other test (and, on a shared one, other people's)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from tickwatch_common.events import AlertState
from tickwatch_common.kafka import ensure_topics, kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import ALERT_CHANGES, ALERTS_TRIGGERED
from tickwatch_devstack.infra import free_port, start_kafka
from tickwatch_devstack.reconcile import ops_token, reconcile
from tickwatch_devstack.testing import TopicCollector, recreate_topic, wait_until
from tickwatch_gateway.alerts.changes_log import read_latest_versions
from tickwatch_gateway.alerts.keys import CHANGES_WATCH
from tickwatch_gateway.runtime.keys import POOL

from .alerts_support import Client, alerts_client, create, eventually
from .conftest import JWT_SECRET, MakeClient, signup
from .test_alerts_events import trigger_for, user_id_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def private_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = start_kafka(tmp_path_factory.mktemp("kafka"), free_port())
    bootstrap = f"127.0.0.1:{server.port}"
    try:
        asyncio.run(ensure_topics(bootstrap))
        yield bootstrap
    finally:
        server.stop()


def latest(collector: TopicCollector) -> dict[str, AlertState]:
    states: dict[str, AlertState] = {}
    for state in collector.received(AlertState):
        if state.version >= states.get(state.alert_id, state).version:
            states[state.alert_id] = state
    return states


async def setup_alerts(client: Client, kafka: str) -> dict[str, Any]:
    """Three live alerts (one updated, one once-alert fired), one deleted; all relayed."""
    alice = await signup(client)
    headers = alice["headers"]
    fired = await create(client, headers, symbol="BTC-USDT", target_price="70000")
    updated = await create(client, headers, symbol="ETH-USDT", target_price="4000")
    recurring = await create(
        client, headers, frequency="recurring", cooldown_seconds=600, target_price="65000"
    )
    deleted = await create(client, headers, symbol="ETH-USDT", target_price="3000")
    path = f"/api/v1/alerts/{updated['id']}"
    resp = await client.patch(path, json={"target_price": "4100"}, headers=headers)
    assert resp.status == 200
    resp = await client.delete(f"/api/v1/alerts/{deleted['id']}", headers=headers)
    assert resp.status == 204
    user_id = await user_id_of(client, headers)
    async with kafka_producer(KafkaSettings(kafka_bootstrap_servers=kafka)) as publisher:
        trigger = trigger_for(fired, user_id)
        await publisher.publish(ALERTS_TRIGGERED, trigger, key=fired["id"])

    async def fired_recorded() -> bool:
        resp = await client.get(f"/api/v1/alerts/{fired['id']}", headers=headers)
        return bool((await resp.json())["status"] == "triggered")

    await eventually(fired_recorded, "the trigger recorded by the gateway")
    rows = await client.app[POOL].fetch("SELECT id, version FROM alerts")
    versions = {str(r["id"]): r["version"] for r in rows}
    assert set(versions) == {fired["id"], updated["id"], recurring["id"]}
    assert versions[updated["id"]] == 2 and versions[fired["id"]] == 2
    await eventually(lambda: unsent(client), "the outbox relayed")
    return {"versions": versions, "fired": fired["id"], "deleted": deleted["id"]}


async def unsent(client: Client) -> bool:
    pool = client.app[POOL]
    return bool(await pool.fetchval("SELECT count(*) = 0 FROM alert_outbox WHERE sent_at IS NULL"))


def replaced_count() -> float:
    value = REGISTRY.get_sample_value("tickwatch_gateway_changes_log_replaced_total")
    return value or 0.0


async def post_reconcile(client: Client) -> dict[str, Any]:
    token = ops_token(JWT_SECRET, "tickwatch", "tickwatch-api")
    resp = await client.post("/ops/reconcile", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_a_new_log_is_rebuilt_from_the_tables_within_the_check_period(
    private_kafka: str, make_client: MakeClient
) -> None:
    client = await alerts_client(
        make_client, kafka_bootstrap_servers=private_kafka, changes_log_check_interval_s=1.0
    )
    watch = client.app[CHANGES_WATCH]
    await asyncio.wait_for(watch.started_up.wait(), 30)
    made = await setup_alerts(client, private_kafka)
    replaced_before = replaced_count()

    recreated = time.monotonic()
    await recreate_topic(
        private_kafka, ALERT_CHANGES.name, ALERT_CHANGES.partitions, ALERT_CHANGES.configs
    )
    async with TopicCollector(private_kafka, [ALERT_CHANGES]) as collector:
        expected = made["versions"]
        await wait_until(
            lambda: {a: s.version for a, s in latest(collector).items()} == expected,
            timeout_s=30,
            what=f"every alert's latest version on the new log: {expected}",
        )
        rebuilt_s = time.monotonic() - recreated
        states = latest(collector)
        assert states[made["fired"]].status == "triggered"  # the engine will not index it
        assert made["deleted"] not in states
        assert replaced_count() == replaced_before + 1

        # The topic is complete now: the reconciles that follow send nothing.
        assert (await post_reconcile(client))["republished"] == 0
        assert (await post_reconcile(client))["republished"] == 0
    print(f"new log rebuilt {rebuilt_s:.2f} s after it was recreated (check period 1 s)")
    assert rebuilt_s < 15


async def test_the_ops_route_reconciles_on_demand_and_tombstones_what_was_deleted(
    private_kafka: str, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client = await alerts_client(
        make_client, kafka_bootstrap_servers=private_kafka, changes_log_check_interval_s=3600
    )
    await asyncio.wait_for(client.app[CHANGES_WATCH].started_up.wait(), 30)
    made = await setup_alerts(client, private_kafka)
    await recreate_topic(
        private_kafka, ALERT_CHANGES.name, ALERT_CHANGES.partitions, ALERT_CHANGES.configs
    )
    # The new log holds a stale state of the deleted alert (a restore from an old copy).
    stale = AlertState(
        alert_id=made["deleted"],
        user_id="00000000-0000-0000-0000-000000000001",
        version=1,
        symbol="ETH-USDT",
        condition="above",
        target_price="3000",
        updated_at=1,
    )
    async with kafka_producer(KafkaSettings(kafka_bootstrap_servers=private_kafka)) as pub:
        await pub.publish(ALERT_CHANGES, stale, key=made["deleted"], partition_key="ETH-USDT")

    # Unauthorised callers are refused; users' access tokens are not ops tokens.
    assert (await client.post("/ops/reconcile")).status == 401
    alice = await signup(client)
    assert (await client.post("/ops/reconcile", headers=alice["headers"])).status == 403

    first = await post_reconcile(client)
    assert (first["republished"], first["tombstoned"]) == (3, 1)
    await eventually(lambda: unsent(client), "the reconcile relayed")
    on_topic = await read_latest_versions(KafkaSettings(kafka_bootstrap_servers=private_kafka), 20)
    assert on_topic == {**made["versions"], made["deleted"]: None}  # None: the tombstone
    # The devstack command calls the same route; a second reconcile sends nothing.
    monkeypatch.setenv("JWT_SECRET", JWT_SECRET)
    url = str(client.make_url("")).rstrip("/")
    assert await asyncio.to_thread(reconcile, tmp_path, None, url) == 0
    second = await post_reconcile(client)
    assert (second["republished"], second["tombstoned"]) == (0, 0)
    assert second["checked"] == 4
