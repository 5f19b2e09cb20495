"""The gateway's cleanup ends within its bound, even when the broker stops answering mid-way,
and leaves no consumer behind when it closes while its groups are still being joined."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from limits import parse
from redis.asyncio import Redis
from structlog.testing import capture_logs
from tickwatch_common.kafka import ensure_topics
from tickwatch_devstack.infra import Server, Stack, free_port, start_kafka
from tickwatch_gateway.app import build_app
from tickwatch_gateway.http.ratelimit import FLUSH_S, FixedWindows
from tickwatch_gateway.runtime.keys import TASKS
from tickwatch_gateway.runtime.redis_guard import RedisGuard
from tickwatch_gateway.runtime.shutdown import stuck_at

from .conftest import gateway_settings

SHUTDOWN_TIMEOUT_S = 2.0


@pytest.fixture
async def own_broker(tmp_path: Path) -> AsyncIterator[tuple[Server, str]]:
    """A broker of this test alone, so it can be frozen."""
    broker = start_kafka(tmp_path / "kafka", free_port())
    bootstrap = f"127.0.0.1:{broker.port}"
    try:
        await ensure_topics(bootstrap)
        yield broker, bootstrap
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)
        broker.stop()


async def wait_until_consuming(client: TestClient[Any, Any], names: set[str]) -> None:
    """Until the named tasks have joined their groups: they are inside the consume loop."""
    deadline = time.monotonic() + 60
    while True:
        tasks = [t for t in client.app[TASKS] if t.get_name() in names]
        if len(tasks) == len(names) and all(
            any(frame.startswith("consume ") for frame in stuck_at(t)) for t in tasks
        ):
            return
        assert time.monotonic() < deadline, [stuck_at(t) for t in tasks]
        await asyncio.sleep(0.05)


def consumer_tasks() -> set[asyncio.Task[Any]]:
    """The running tasks of aiokafka's clients: coordinators, heartbeats, fetchers, metadata.

    Not the readers of single connections: aiokafka's ``bootstrap()`` leaves its bootstrap
    connection open when it is cancelled mid-request (its own bug, seen here about one time in
    three); that is a socket until the broker closes it, not a consumer."""
    running = set()
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        if (
            code is not None
            and "/aiokafka/" in code.co_filename
            and code.co_qualname != "AIOKafkaConnection._read"
        ):
            running.add(task)
    return running


async def test_cleanup_is_bounded_when_the_broker_stops_answering(
    stack: Stack, fresh_database: str, own_broker: tuple[Server, str]
) -> None:
    broker, bootstrap = own_broker
    before = consumer_tasks()
    settings = gateway_settings(
        stack,
        fresh_database,
        kafka_bootstrap_servers=bootstrap,
        alerts_consumer_group=f"t-alerts-{uuid.uuid4().hex[:10]}",
        shutdown_timeout_s=SHUTDOWN_TIMEOUT_S,
    )
    # A second replica joins the groups once the first is in, so each group rebalances: a
    # consumer of a later generation says goodbye to its group when it stops (LeaveGroup),
    # and a broker that does not answer holds that request for the request timeout (40 s).
    replicas = [TestClient(TestServer(build_app(settings))) for _ in range(2)]
    try:
        for replica in replicas:
            await replica.start_server()
            await wait_until_consuming(replica, {"candle-store", "alert-events"})
        # Frozen, not dead: connections stay open and requests are never answered.
        os.kill(broker.proc.pid, signal.SIGSTOP)
        started = time.monotonic()
        with capture_logs() as logs:
            await asyncio.wait_for(asyncio.gather(*(r.close() for r in replicas)), 60)
        elapsed = time.monotonic() - started
    finally:
        for replica in replicas:
            await replica.close()
    assert elapsed < 4 * SHUTDOWN_TIMEOUT_S + 3, f"cleanup took {elapsed:.1f} s"
    overran = {e.get("what") for e in logs if e["event"] == "shutdown_overran"}
    assert overran & {"alert-events", "candle-store"}, logs
    left = consumer_tasks() - before
    assert not left, [stuck_at(t) for t in left]


async def test_closing_while_the_groups_are_joined_leaves_no_consumer_running(
    stack: Stack, fresh_database: str
) -> None:
    before = consumer_tasks()
    settings = gateway_settings(
        stack, fresh_database, alerts_consumer_group=f"t-alerts-{uuid.uuid4().hex[:10]}"
    )
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(settings)))
    await client.start_server()  # the group consumers are joining now (a join takes seconds)
    started = time.monotonic()
    await client.close()
    assert time.monotonic() - started < SHUTDOWN_TIMEOUT_S
    left = consumer_tasks() - before
    assert not left, [stuck_at(t) for t in left]


async def test_the_rate_limit_flush_stops_when_cancelled_mid_flush(stack: Stack) -> None:
    """The other shutdown hang: redis-py sends each command under Python 3.11's
    ``asyncio.wait_for``, which drops a cancellation landing as the send completes; the flush
    then returned normally and the flush loop went on for ever. Cancelled at random points
    around its flushes, it must stop every time (before the fix about one in four did not)."""
    redis = Redis.from_url(stack.redis_url, socket_timeout=2)
    guard = RedisGuard(redis, f"t-{uuid.uuid4().hex[:8]}:")
    try:
        for _ in range(40):
            windows = FixedWindows(guard, parse("1000/minute"))
            for n in range(20):
                await windows.hit(f"id{n}")
                windows.hit_known(f"id{n}")  # pending: the next flush sends them
            task = asyncio.create_task(windows.run())
            await asyncio.sleep(FLUSH_S + random.random() * 0.004)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=1)
            assert done, f"the flush loop survived its cancellation: {stuck_at(task)}"
    finally:
        await redis.aclose()
