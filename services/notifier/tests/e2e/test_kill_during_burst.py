"""The notifier as a real process, killed with SIGKILL in the middle of a burst of 300 triggers
and restarted: every trigger is delivered, and the only e-mails sent twice are sends that were in
flight at the kill, each repeat with its first copy's ``Message-ID``."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from tickwatch_common.events import Trigger
from tickwatch_common.kafka import kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import ALERTS_TRIGGERED
from tickwatch_devstack.infra import free_port
from tickwatch_devstack.services import service_process
from tickwatch_devstack.testing import log_tail, wait_until

pytestmark = pytest.mark.e2e

BURST = 300
KILL_AFTER = 100  # mails accepted by the SMTP server before the kill
CONCURRENCY = 50  # NOTIFIER_MAX_CONCURRENT: claimed sends at once, the coarse bound


class Mails:
    """The messages the test's SMTP server accepted for this run, by recipient."""

    def __init__(self, server: Any, run: str) -> None:
        self.server, self.marker = server, f"burst-{run}-".encode()

    def ours(self) -> list[email.message.EmailMessage]:
        return [
            email.message_from_bytes(raw, policy=email.policy.default)
            for raw in list(self.server.accepted)
            if self.marker in raw
        ]

    def count(self) -> int:
        return sum(self.marker in raw for raw in list(self.server.accepted))

    def by_event(self) -> dict[str, list[str]]:
        """event_id -> the Message-ID of each copy, in arrival order."""
        found: dict[str, list[str]] = {}
        for mail in self.ours():
            found.setdefault(str(mail["X-Tickwatch-Event-Id"]), []).append(str(mail["Message-ID"]))
        return found


async def started(env: dict[str, str], port: int, log: Path) -> tuple[Any, subprocess.Popen[bytes]]:
    """The notifier process, ready (its wait for ``/ready`` runs off the event loop)."""
    manager = service_process("notifier", env, port, log_path=log)
    proc = await asyncio.to_thread(manager.__enter__)
    return manager, proc


async def other_sessions(database_url: str) -> int:
    """Connections to the test database other than ours: the killed process's, until PostgreSQL
    has noticed they are gone (and finished any statement they had sent)."""
    conn = await asyncpg.connect(database_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await conn.close()


async def statuses(database_url: str, run: str) -> dict[str, str]:
    """This run's deliveries by event id (another test's trigger may reach this notifier too)."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT event_id, status FROM notifier.delivery WHERE event_id LIKE $1",
            f"burst-{run}-%",
        )
    finally:
        await conn.close()
    return {r["event_id"]: r["status"] for r in rows}


async def test_kill_9_mid_burst_repeats_only_the_sends_in_flight(
    stack: Any,
    fresh_database: str,
    tmp_path: Path,
    counting_smtp: Any,
    email_trigger: Callable[[str, str], Trigger],
) -> None:
    run = uuid.uuid4().hex[:8]
    server = counting_smtp()
    mails = Mails(server, run)
    env = {
        **os.environ,
        **stack.env(),
        "DATABASE_URL": fresh_database,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(server.port),
        "NOTIFIER_GROUP": f"notifier-burst-{run}",
        "NOTIFIER_OFFSET_RESET": "latest",
        "NOTIFIER_MAX_CONCURRENT": str(CONCURRENCY),
        "NOTIFIER_LEASE_S": "3",  # a restart retries the dead process's sends after this
        "NOTIFIER_SWEEP_INTERVAL_S": "0.5",
        "KAFKA_SESSION_TIMEOUT_MS": "3000",
        "KAFKA_HEARTBEAT_INTERVAL_MS": "300",
        "MAIL_FROM": "Tickwatch <alerts@tickwatch.test>",
    }
    port = free_port()
    triggers = [
        email_trigger(f"burst-{run}-{i:03d}", f"burst-{run}-{i:03d}@example.com")
        for i in range(BURST)
    ]
    settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    async with kafka_producer(settings, linger_ms=0) as publisher:
        first, proc = await started(env, port, tmp_path / "notifier-1.log")
        try:
            acks = [await publisher.send(ALERTS_TRIGGERED, t, key=t.alert_id) for t in triggers]
            await wait_until(
                lambda: mails.count() >= KILL_AFTER, 60, f"{KILL_AFTER} mails before the kill"
            )
            os.killpg(proc.pid, signal.SIGKILL)  # no goodbye: nothing flushed, nothing recorded
            await asyncio.to_thread(proc.wait, 10)
            mailed_at_kill = mails.count()
        finally:
            await asyncio.to_thread(first.__exit__, None, None, None)
        await asyncio.gather(*acks)

        # The moment of the kill, as the database and the SMTP server hold it once both have
        # seen the process's connections end.
        await wait_until(lambda: server.open == 0, 30, "the SMTP sessions of the dead process")

        async def dead_sessions_gone() -> bool:
            return await other_sessions(fresh_database) == 0

        await wait_until(
            dead_sessions_gone, 30, "PostgreSQL to drop the dead notifier's connections"
        )
        at_kill = await statuses(fresh_database, run)
        accepted_at_kill = mails.by_event()
        # In flight: the server accepted the mail, the delivery log has no outcome for it.
        in_flight = {e for e in accepted_at_kill if at_kill.get(e) == "sending"}
        claimed = [e for e, s in at_kill.items() if s == "sending"]

        second, _ = await started(env, port, tmp_path / "notifier-2.log")
        try:
            wanted = {t.event_id for t in triggers}
            try:
                await wait_until(lambda: wanted <= set(mails.by_event()), 90, "every trigger")

                async def all_sent() -> bool:
                    return Counter((await statuses(fresh_database, run)).values())["sent"] >= BURST

                await wait_until(all_sent, 60, "every delivery recorded sent")
            except TimeoutError:
                print(log_tail(tmp_path / "notifier-2.log"))
                raise
        finally:
            await asyncio.to_thread(second.__exit__, None, None, None)

    copies = mails.by_event()
    duplicated = {e: ids for e, ids in copies.items() if len(ids) > 1}
    extra = sum(len(ids) - 1 for ids in duplicated.values())
    print(
        f"\nkilled after {mailed_at_kill} mails: {len(claimed)} claimed without an outcome,"
        f" {len(in_flight)} of them already accepted by the SMTP server;"
        f" {extra} duplicate(s) after the restart: {sorted(duplicated)}"
    )
    assert mailed_at_kill < BURST  # the kill landed inside the burst
    assert len(claimed) <= CONCURRENCY  # claimed without an outcome: never more than the slots
    assert set(copies) == wanted  # every trigger delivered
    for event_id, ids in copies.items():
        assert set(ids) == {f"<{event_id}.email@tickwatch>"}  # every copy, the same Message-ID
    assert set(duplicated) <= in_flight  # only a send in flight at the kill is repeated
    assert all(len(ids) == 2 for ids in duplicated.values())  # and at most once
    assert extra <= len(in_flight)
