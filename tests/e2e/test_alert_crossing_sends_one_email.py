"""Alert engine and notifier as real processes: ops endpoints, each crossing becomes exactly one
email, and ``kill -9`` of the notifier and of the engine in the middle of a stream of crossings,
then a restart, loses and duplicates none."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from tickwatch_alert_engine.engine import trigger_event_id
from tickwatch_common.events import AlertState, Trigger
from tickwatch_common.kafka import Publisher, kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import ALERT_CHANGES, ALERTS_TRIGGERED, TICKS
from tickwatch_devstack.infra import Stack, free_port
from tickwatch_devstack.services import service_process
from tickwatch_devstack.testing import replay_tick, wait_until

pytestmark = pytest.mark.e2e


def get(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return resp.status, resp.read().decode()


def mails_to(mail_dir: Path, address: str) -> list[email.message.EmailMessage]:
    found = []
    for sidecar in sorted(mail_dir.glob("*.eml.json")):
        if address in json.loads(sidecar.read_text())["rcpt_tos"]:
            raw = (mail_dir / sidecar.name.removesuffix(".json")).read_bytes()
            found.append(email.message_from_bytes(raw, policy=email.policy.default))
    return found


class Feed:
    def __init__(self, publisher: Publisher, symbol: str) -> None:
        self.publisher, self.symbol = publisher, symbol
        self.ts = int(time.time() * 1000)

    async def alert(self, alert_id: str, condition: str, target: str, **kw: Any) -> None:
        state = AlertState(
            alert_id=alert_id,
            user_id="u-e2e",
            version=1,
            symbol=self.symbol,
            condition=condition,  # type: ignore[arg-type]
            target_price=target,  # type: ignore[arg-type]
            updated_at=self.ts,
            **kw,
        )
        await self.publisher.publish(ALERT_CHANGES, state, key=alert_id, partition_key=self.symbol)

    async def tick(self, price: str) -> None:
        self.ts += 1000
        tick = replay_tick(self.symbol, price, self.ts, ts_ingest=int(time.time() * 1000))
        await self.publisher.publish(TICKS, tick, key=self.symbol)

    async def crossings(self, n: int) -> None:
        for _ in range(n):
            await self.tick("99")
            await self.tick("101")


async def test_crossings_become_one_email_each_across_kill_9_of_both_services(
    stack: Stack, fresh_database: str, tmp_path: Path
) -> None:
    assert stack.mail_dir is not None
    suffix = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        **stack.env(),
        "DATABASE_URL": fresh_database,
        "ALERT_ENGINE_GROUP": f"alert-engine-{suffix}",
        "NOTIFIER_GROUP": f"notifier-{suffix}",
        "NOTIFIER_OFFSET_RESET": "latest",
        "KAFKA_SESSION_TIMEOUT_MS": "3000",
        "KAFKA_HEARTBEAT_INTERVAL_MS": "300",
        "PUBLIC_BASE_URL": "https://tickwatch.test",
        "MAIL_FROM": "Tickwatch <alerts@tickwatch.test>",
    }
    symbol = f"E{uuid.uuid4().hex[:7].upper()}-USDT"
    to = f"e2e-{suffix}@example.com"
    cross, probe = f"cross-{suffix}", f"probe-{suffix}"
    triggers: list[Trigger] = []
    engine_port, notifier_port = free_port(), free_port()

    reader = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap_servers, group_id=None)
    await reader.start()
    tps = [TopicPartition(ALERTS_TRIGGERED.name, p) for p in range(ALERTS_TRIGGERED.partitions)]
    reader.assign(tps)
    for tp, end in (await reader.end_offsets(tps)).items():
        reader.seek(tp, end)  # explicit: a lazy reset could land after our first trigger

    async def collect() -> None:
        async for record in reader:
            if record.value:
                t = Trigger.model_validate_json(record.value)
                if t.symbol == symbol:
                    triggers.append(t)

    collector = asyncio.create_task(collect())
    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)

    def kill(proc: subprocess.Popen[bytes]) -> None:
        os.killpg(proc.pid, signal.SIGKILL)  # no goodbye: no flush, no group leave
        proc.wait(10)

    try:
        async with kafka_producer(settings, linger_ms=0) as publisher:
            feed = Feed(publisher, symbol)
            with contextlib.ExitStack() as first:
                notifier = first.enter_context(
                    service_process("notifier", env, notifier_port, log_path=tmp_path / "n1.log")
                )
                engine = first.enter_context(
                    service_process("alert-engine", env, engine_port, log_path=tmp_path / "e1.log")
                )
                for port, metric in (
                    (engine_port, "alert_engine_alerts"),
                    (notifier_port, "notifier_deliveries_in_flight"),
                ):
                    assert get(port, "/health")[0] == 200
                    status, body = get(port, "/ready")
                    assert status == 200 and json.loads(body)["status"] == "ready"
                    assert metric in get(port, "/metrics")[1]
                await feed.alert(
                    cross, "crosses_up", "100", frequency="recurring", email=to, note="e2e"
                )
                await feed.alert(probe, "above", "1", channels=[])
                # The probe fires once the engine holds both alerts (same partition, in order).
                for _ in range(120):
                    await feed.tick("50")
                    try:
                        await wait_until(
                            lambda: any(t.alert_id == probe for t in triggers), 0.5, "probe"
                        )
                        break
                    except TimeoutError:
                        continue
                else:
                    raise TimeoutError("the engine never loaded the alerts")
                await feed.crossings(3)
                await wait_until(
                    lambda: len(mails_to(stack.mail_dir, to)) >= 3, 60, what="3 emails"
                )
                kill(notifier)  # the notifier dies; triggers wait in the broker
                await feed.crossings(2)
                kill(engine)  # and the engine, in the middle of the stream
                await feed.crossings(2)
            with contextlib.ExitStack() as second:
                second.enter_context(
                    service_process("alert-engine", env, engine_port, log_path=tmp_path / "e2.log")
                )
                second.enter_context(
                    service_process("notifier", env, notifier_port, log_path=tmp_path / "n2.log")
                )
                await feed.crossings(2)
                await wait_until(
                    lambda: len({t.event_id for t in triggers if t.alert_id == cross}) >= 9,
                    60,
                    what="9 triggers",
                )
                await wait_until(
                    lambda: len(mails_to(stack.mail_dir, to)) >= 9, 60, what="9 emails"
                )
    finally:
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
        await reader.stop()

    fired = [t for t in triggers if t.alert_id == cross]
    assert sorted({t.sequence for t in fired}) == list(range(1, 10))
    mails = mails_to(stack.mail_dir, to)
    assert len(mails) == 9
    assert len({m["Message-ID"] for m in mails}) == 9
    [first] = [
        m for m in mails if m["Message-ID"] == f"<{trigger_event_id(cross, 1)}.email@tickwatch>"
    ]
    assert first["Subject"] == f"Tickwatch: {symbol} crossed up through 100"
    text = first.get_body(preferencelist=("plain",)).get_content()
    assert "101" in text and "e2e" in text and f"https://tickwatch.test/alerts/{cross}" in text
