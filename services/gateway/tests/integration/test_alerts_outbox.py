"""The outbox relay: every change reaches alerts.changes.v1 in order, once per row, even with
several relays."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from tickwatch_common.events import AlertState
from tickwatch_common.kafka import partition_for
from tickwatch_common.postgres import migrate
from tickwatch_common.topics import ALERT_CHANGES
from tickwatch_devstack.infra import Stack
from tickwatch_gateway.alerts.domain import AlertSpec
from tickwatch_gateway.alerts.outbox import OutboxRelay
from tickwatch_gateway.alerts.store import AlertStore
from tickwatch_gateway.runtime import resources as gateway_app
from tickwatch_gateway.runtime.shutdown import stuck_at

from .alerts_support import alerts_client, create
from .conftest import MakeClient, signup

pytestmark = pytest.mark.integration


async def test_create_update_delete_reach_the_topic_keyed_and_partitioned(
    stack: Stack, make_client: MakeClient
) -> None:
    partition = partition_for("ETH-USDT", ALERT_CHANGES.partitions)
    tp = TopicPartition(ALERT_CHANGES.name, partition)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.kafka_bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)
        client = await alerts_client(make_client)
        alice = await signup(client)
        created = await create(client, alice["headers"], symbol="ETH-USDT", target_price="4000")
        path = f"/api/v1/alerts/{created['id']}"
        resp = await client.patch(path, json={"target_price": "4100"}, headers=alice["headers"])
        assert resp.status == 200
        assert (await client.delete(path, headers=alice["headers"])).status == 204

        seen: list[tuple[int, AlertState | None]] = []
        deadline = time.monotonic() + 20
        while not seen or seen[-1][1] is not None:
            assert time.monotonic() < deadline, f"no tombstone; seen {seen}"
            batch = await consumer.getmany(tp, timeout_ms=200)
            for record in batch.get(tp, []):
                if record.key == created["id"].encode():
                    state = (
                        None
                        if record.value is None
                        else AlertState.model_validate_json(record.value)
                    )
                    seen.append((record.partition, state))
    finally:
        await consumer.stop()
    assert {p for p, _ in seen} == {partition}
    states = [s for _, s in seen if s is not None]
    assert [s.version for s in states] == [1, 2]
    assert [s.target_price for s in states] == [Decimal("4000"), Decimal("4100")]
    assert states[0].email == alice["email"]
    assert states[0].user_id and states[0].status == "active"
    assert seen[-1][1] is None


class RecordingPublisher:
    """Publishes nowhere; records what it was asked to send, slowly enough to interleave."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int | None]] = []

    async def send(
        self, topic: Any, event: AlertState | None, *, key: str, partition_key: str
    ) -> asyncio.Future[None]:
        await asyncio.sleep(0.001)
        self.sent.append((key, None if event is None else event.version))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


async def test_two_relays_publish_each_row_once_and_each_alert_in_order(
    stack: Stack, fresh_database: str
) -> None:
    await migrate(fresh_database, gateway_app.SCHEMA, gateway_app.MIGRATIONS)
    settings = {"server_settings": {"search_path": "gateway,public"}}
    async with (
        asyncpg.create_pool(fresh_database, min_size=2, max_size=8, **settings) as pool_a,
        asyncpg.create_pool(fresh_database, min_size=2, max_size=8, **settings) as pool_b,
    ):
        user = uuid.uuid4()
        await pool_a.execute(
            "INSERT INTO users (id, email, password_hash) VALUES ($1, 'r@example.com', 'x')", user
        )
        store = AlertStore(pool_a, max_active_per_user=1000)
        ids = []
        for i in range(40):
            spec = AlertSpec("BTC-USDT", "above", target_price=Decimal(70000 + i))
            ids.append((await store.create(str(user), spec)).id)
        for alert_id in ids[:20]:  # versions 2 and 3 of half of them
            for price in (1, 2):
                await store.update(
                    str(user),
                    alert_id,
                    lambda a, p=price: AlertSpec(a.symbol, "above", target_price=Decimal(p)),
                )
        for alert_id in ids[:5]:
            await store.delete(str(user), alert_id)
        rows = await pool_a.fetchval("SELECT count(*) FROM alert_outbox")
        assert rows == 40 + 40 + 5

        publisher = RecordingPublisher()
        relays = [
            OutboxRelay(pool, publisher, batch_size=7)  # type: ignore[arg-type]
            for pool in (pool_a, pool_b, pool_a, pool_b)
        ]
        await asyncio.gather(*(relay.drain() for relay in relays))
        # A relay may stop while another still holds rows; drain what remains.
        await relays[0].drain()

        assert len(publisher.sent) == rows
        assert len(set(publisher.sent)) == rows
        for alert_id in ids:
            versions = [v for k, v in publisher.sent if k == alert_id]
            expected: list[int | None] = [1, 2, 3] if alert_id in ids[:20] else [1]
            if alert_id in ids[:5]:
                expected.append(None)
            assert versions == expected, alert_id
        assert await pool_a.fetchval("SELECT count(*) FROM alert_outbox WHERE sent_at IS NULL") == 0
        # Sent rows are purged after a while.
        await OutboxRelay(pool_b, publisher, keep_sent_s=0).purge_sent()  # type: ignore[arg-type]
        assert await pool_a.fetchval("SELECT count(*) FROM alert_outbox") == 0


async def test_the_relay_wakes_on_notify(stack: Stack, fresh_database: str) -> None:
    await migrate(fresh_database, gateway_app.SCHEMA, gateway_app.MIGRATIONS)
    async with asyncpg.create_pool(
        fresh_database, min_size=1, max_size=4, server_settings={"search_path": "gateway,public"}
    ) as pool:
        user = uuid.uuid4()
        await pool.execute(
            "INSERT INTO users (id, email, password_hash) VALUES ($1, 'n@example.com', 'x')", user
        )
        publisher = RecordingPublisher()
        relay = OutboxRelay(pool, publisher, poll_interval_s=60)  # type: ignore[arg-type]
        task = asyncio.create_task(relay.run())
        try:
            await asyncio.wait_for(relay.listening.wait(), 10)
            spec = AlertSpec("BTC-USDT", "below", target_price=Decimal(1))
            created = await AlertStore(pool, 10).create(str(user), spec)
            deadline = time.monotonic() + 5  # far less than the 60 s poll
            while not publisher.sent:
                assert time.monotonic() < deadline, "the relay did not wake"
                await asyncio.sleep(0.02)
            assert publisher.sent == [(created.id, 1)]
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


async def test_a_relay_cancelled_as_it_is_woken_still_stops(
    stack: Stack, fresh_database: str
) -> None:
    """The shutdown hang: a NOTIFY and the cancellation landing in the same loop iteration made
    Python 3.11's ``asyncio.wait_for`` return the wake-up and drop the cancellation, so the
    relay went on polling and the app's cleanup waited for it for ever."""
    await migrate(fresh_database, gateway_app.SCHEMA, gateway_app.MIGRATIONS)
    async with asyncpg.create_pool(
        fresh_database, min_size=1, max_size=4, server_settings={"search_path": "gateway,public"}
    ) as pool:
        relay = OutboxRelay(pool, RecordingPublisher(), poll_interval_s=60)  # type: ignore[arg-type]
        task = asyncio.create_task(relay.run())
        try:
            deadline = time.monotonic() + 10
            while not stuck_at(task)[-1].startswith(("Event.wait", "wait_for")):
                assert time.monotonic() < deadline, f"the relay never waited: {stuck_at(task)}"
                await asyncio.sleep(0.01)
            relay._wake.set()  # what a NOTIFY does
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=5)
            assert done, f"the relay swallowed its cancellation: {stuck_at(task)}"
            assert task.cancelled()
        finally:
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=1)
