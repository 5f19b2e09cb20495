"""A burst of e-mail triggers through the notifier: throughput, and the crash window.

The notifier runs in this process against a real broker and PostgreSQL (``start_stack``, or
the servers named by the environment) and an SMTP server of the bench's own (aiosmtpd) that
notes when it accepted each message. Printed:

- mails per second from the first trigger published to the last mail accepted;
- the lag from the SMTP server accepting a mail to the delivery log recording it ``sent``
  (the statement's ``now()``), p50 / p99 / max;
- the crash window: the most mails at any instant that the server had accepted and the log had
  not yet recorded, i.e. the duplicates a ``kill -9`` at the worst moment would cause.

``python services/notifier/bench/burst.py [--triggers 2000] [--rounds 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from aiosmtpd.controller import Controller
from tickwatch_common.events import Trigger, TriggerChannel
from tickwatch_common.kafka import ensure_topics, kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import ALERTS_TRIGGERED
from tickwatch_devstack.infra import create_database, free_port, start_stack
from tickwatch_devstack.testing import wait_until
from tickwatch_notifier.__main__ import running_notifier
from tickwatch_notifier.settings import Settings


class Stopwatch:
    """aiosmtpd handler: accepts every message and notes when, by recipient."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.accepted_at: dict[str, float] = {}  # recipient -> time.time() of the first copy

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        for rcpt in envelope.rcpt_tos:
            if self.marker in rcpt:
                self.accepted_at.setdefault(rcpt, time.time())
        return "250 OK"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def widest_window(accepted: list[float], recorded: list[float]) -> int:
    """Most mails accepted and not yet recorded at any one instant."""
    events = sorted([(t, 1) for t in accepted] + [(t, -1) for t in recorded])
    open_, widest = 0, 0
    for _, step in events:
        open_ += step
        widest = max(widest, open_)
    return widest


async def one_round(stack: Any, n: int, database_url: str) -> None:
    run = uuid.uuid4().hex[:8]
    watch = Stopwatch(f"bench-{run}-")
    smtp_port = free_port()
    controller = Controller(watch, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    settings = Settings(
        kafka_bootstrap_servers=stack.kafka_bootstrap_servers,
        database_url=database_url,
        notifier_group=f"bench-notifier-{run}",
        notifier_offset_reset="latest",
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
    )
    triggers = [
        Trigger.model_validate(
            {
                "event_id": f"bench-{run}-{i}",
                "alert_id": f"a-{run}-{i}",
                "user_id": "u-bench",
                "sequence": 1,
                "symbol": "BTC-USDT",
                "condition": "above",
                "threshold": "70000",
                "price": "70001",
                "ts_event": 1_795_000_000_000,
                "triggered_at": 1_795_000_000_001,
                "channels": [TriggerChannel(type="email", to=f"bench-{run}-{i}@example.com")],
            }
        )
        for i in range(n)
    ]
    try:
        kafka = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
        async with (
            kafka_producer(kafka, linger_ms=5) as publisher,
            running_notifier(settings, serve_ops=False) as worker,
        ):
            await wait_until(worker.assigned.is_set, 60, "assignment")
            started = time.time()
            acks = [await publisher.send(ALERTS_TRIGGERED, t, key=t.alert_id) for t in triggers]
            await asyncio.gather(*acks)
            await wait_until(lambda: len(watch.accepted_at) >= n, 300, "every mail")
            elapsed = max(watch.accepted_at.values()) - started
            conn = await asyncpg.connect(database_url)
            try:
                for _ in range(3000):
                    rows = await conn.fetch(
                        "SELECT event_id, extract(epoch FROM updated_at)::float8 AS at"
                        " FROM notifier.delivery WHERE status = 'sent' AND event_id LIKE $1",
                        f"bench-{run}-%",
                    )
                    if len(rows) >= n:
                        break
                    await asyncio.sleep(0.02)
            finally:
                await conn.close()
    finally:
        controller.stop()
    recorded = {r["event_id"]: r["at"] for r in rows}
    accepted = {rcpt.split("@")[0]: at for rcpt, at in watch.accepted_at.items()}
    lags = [1000 * (recorded[e] - accepted[e]) for e in accepted if e in recorded]
    print(
        f"  {n} mails in {elapsed:.2f} s: {n / elapsed:,.0f} mails/s;"
        f" accepted -> recorded sent: p50 {statistics.median(lags):.1f} ms,"
        f" p99 {percentile(lags, 99):.1f} ms, max {max(lags):.1f} ms;"
        f" crash window: at most {widest_window(list(accepted.values()), list(recorded.values()))}"
        " accepted and unrecorded at once"
    )


async def bench(n: int, rounds: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="tickwatch-bench-notifier-"))
    # Our own SMTP server below; the stack's catcher is not needed.
    environ = {**os.environ, "SMTP_HOST": os.environ.get("SMTP_HOST", "127.0.0.1")}
    stack = await asyncio.to_thread(start_stack, data_dir, environ=environ)
    try:
        await ensure_topics(stack.kafka_bootstrap_servers)
        server = stack.database_url.rsplit("/", 1)[0] + "/postgres"
        print(f"notifier burst: {n} e-mail triggers, {rounds} round(s), a fresh database each")
        for _ in range(rounds):
            database_url = await create_database(server, f"bench_{uuid.uuid4().hex[:8]}")
            await one_round(stack, n, database_url)
    finally:
        await asyncio.to_thread(stack.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--triggers", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(bench(args.triggers, args.rounds))


if __name__ == "__main__":
    main()
