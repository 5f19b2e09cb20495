"""The broker killed with ``kill -9`` and restarted while the system runs (issue 9).

On a broker of this test alone (the same data dir and address before and after, as a crashed
production broker comes back): the ingestor (replay session), the alert engine and the notifier
run as processes. After the kill every ``/ready`` turns 503; after the restart they turn 200
again by themselves, the ingestor's ticks flow again, and a crossing published after the restart
becomes one trigger and one e-mail."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tickwatch_common.events import AlertState, Tick, Trigger
from tickwatch_common.kafka import ensure_topics, kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import ALERT_CHANGES, ALERTS_TRIGGERED, TICKS
from tickwatch_devstack.infra import Server, Stack, free_port, start_kafka
from tickwatch_devstack.services import ready_status, service_process
from tickwatch_devstack.testing import TopicCollector, replay_tick, wait_until

pytestmark = pytest.mark.e2e

SERVICES = ("ingestor", "alert-engine", "notifier")


def mails_to(mail_dir: Path, address: str) -> int:
    return sum(
        address in json.loads(sidecar.read_text())["rcpt_tos"]
        for sidecar in mail_dir.glob("*.eml.json")
    )


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Server]:
    broker = start_kafka(tmp_path / "kafka", free_port())
    try:
        yield broker
    finally:
        broker.stop()


async def test_a_broker_killed_and_restarted_is_survived(
    stack: Stack, fresh_database: str, own_broker: Server, tmp_path: Path
) -> None:
    assert stack.mail_dir is not None
    bootstrap = f"127.0.0.1:{own_broker.port}"
    await ensure_topics(bootstrap)
    suffix = uuid.uuid4().hex[:8]
    symbol = f"B{suffix[:6].upper()}-USDT"
    to = f"broker-restart-{suffix}@example.com"
    env = {
        **os.environ,
        **stack.env(),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DATABASE_URL": fresh_database,
        "MARKET_SOURCES": "replay",
        "REPLAY_SPEED": "20",
        "BACKFILL_ON_START": "false",
        "KAFKA_SESSION_TIMEOUT_MS": "3000",
        "KAFKA_HEARTBEAT_INTERVAL_MS": "300",
        "MAIL_FROM": "Tickwatch <alerts@tickwatch.test>",
    }
    ports = {service: free_port() for service in SERVICES}
    settings = KafkaSettings(kafka_bootstrap_servers=bootstrap)
    with contextlib.ExitStack() as services:
        for service in SERVICES:
            services.enter_context(
                service_process(service, env, ports[service], log_path=tmp_path / f"{service}.log")
            )
        # Kill the broker: no goodbye to anyone. Every service notices and says so on /ready.
        os.killpg(own_broker.proc.pid, signal.SIGKILL)
        own_broker.proc.wait(10)
        await wait_until(
            lambda: all(ready_status(p) == 503 for p in ports.values()),
            60,
            what="every /ready 503 while the broker is down",
        )
        restarted = await asyncio.to_thread(start_kafka, tmp_path / "kafka", own_broker.port)
        try:
            await wait_until(
                lambda: all(ready_status(p) == 200 for p in ports.values()),
                90,
                what="every /ready 200 again after the broker's restart",
            )
            restarted_at_ms = int(time.time() * 1000)
            async with TopicCollector(bootstrap, [TICKS, ALERTS_TRIGGERED]) as seen:
                await wait_until(
                    lambda: any(
                        t.source == "replay" and t.ts_ingest > restarted_at_ms
                        for t in seen.received(Tick)
                    ),
                    60,
                    what="the ingestor's ticks flowing again",
                )
                async with kafka_producer(settings, linger_ms=0) as publisher:
                    alert_id = f"after-restart-{suffix}"
                    now = int(time.time() * 1000)
                    await publisher.publish(
                        ALERT_CHANGES,
                        AlertState(
                            alert_id=alert_id,
                            user_id=f"u-{suffix}",
                            version=1,
                            symbol=symbol,
                            condition="above",
                            target_price="100",  # type: ignore[arg-type]
                            updated_at=now,
                            email=to,
                        ),
                        key=alert_id,
                        partition_key=symbol,
                    )
                    ts = now
                    # Ticks below the target until the engine holds the alert, then one above.
                    deadline = time.monotonic() + 60
                    while not any(t.alert_id == alert_id for t in seen.received(Trigger)):
                        assert time.monotonic() < deadline, "the alert never fired"
                        ts += 1000
                        price = "101" if ts - now > 3000 else "99"
                        tick = replay_tick(symbol, price, ts, ts_ingest=int(time.time() * 1000))
                        await publisher.publish(TICKS, tick, key=symbol)
                        await asyncio.sleep(0.2)
                await wait_until(lambda: mails_to(stack.mail_dir, to) >= 1, 60, what="e-mail")
                assert len([t for t in seen.received(Trigger) if t.alert_id == alert_id]) == 1
        finally:
            restarted.stop()
