"""An accepted send's outcome survives a database outage of a few seconds (a PostgreSQL
restart): the write is retried, not dropped, so the send is not repeated when its lease ends."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
from tickwatch_common.events import Trigger, TriggerChannel
from tickwatch_notifier.channels import SENT, Outcome
from tickwatch_notifier.deliveries import Claim
from tickwatch_notifier.dispatcher import Dispatcher, Limits


class OutageLog:
    """A delivery log whose outcome writes fail ``failures`` times, as during a restart."""

    def __init__(self, trigger: Trigger, failures: int, error: Exception) -> None:
        self.trigger, self.failures, self.error = trigger, failures, error
        self.finished: list[str] = []
        self.claims = 0

    async def claim(self, event_id: str, channel: str, lease_s: float) -> Claim | None:
        self.claims += 1
        return Claim(1, self.trigger) if self.claims == 1 else None

    async def finish(self, event_id: str, channel: str, status: str, detail: str) -> None:
        if self.failures:
            self.failures -= 1
            raise self.error
        self.finished.append(status)

    async def mark_published(self, event_id: str, channel: str, status: str) -> None:
        pass


class Statuses:
    def __init__(self) -> None:
        self.published: list[Any] = []

    async def publish(self, topic: Any, event: Any, *, key: str) -> None:
        self.published.append(event)


class CountingChannel:
    def __init__(self) -> None:
        self.sends = 0

    def destination(self, channel: TriggerChannel) -> str:
        return "test"

    async def send(self, trigger: Trigger, channel: TriggerChannel) -> Outcome:
        self.sends += 1
        return SENT


async def deliver_through_outage(
    email_trigger: Callable[[str, str], Trigger], failures: int, lease_s: float
) -> tuple[OutageLog, CountingChannel]:
    trigger = email_trigger("ev-outage", "outage@example.com")
    log = OutageLog(trigger, failures, asyncpg.CannotConnectNowError("the database is starting"))
    channel = CountingChannel()
    dispatcher = Dispatcher(
        log,  # type: ignore[arg-type]
        Statuses(),  # type: ignore[arg-type]
        {"email": channel},
        Limits(lease_s=lease_s),
    )
    await asyncio.wait_for(dispatcher._deliver(trigger, "email"), 30)
    return log, channel


async def test_an_outcome_is_recorded_once_the_database_is_back(
    email_trigger: Callable[[str, str], Trigger],
) -> None:
    log, channel = await deliver_through_outage(email_trigger, failures=3, lease_s=60)
    assert channel.sends == 1
    assert log.finished == ["sent"]


async def test_a_connection_the_restart_broke_mid_protocol_is_an_outage_too(
    email_trigger: Callable[[str, str], Trigger],
) -> None:
    trigger = email_trigger("ev-broken", "broken@example.com")
    log = OutageLog(trigger, 2, asyncpg.InternalClientError("cannot switch to state 12"))
    channel = CountingChannel()
    dispatcher = Dispatcher(
        log,  # type: ignore[arg-type]
        Statuses(),  # type: ignore[arg-type]
        {"email": channel},
        Limits(lease_s=60),
    )
    await asyncio.wait_for(dispatcher._deliver(trigger, "email"), 30)
    assert (channel.sends, log.finished) == (1, ["sent"])


async def test_past_half_the_lease_the_write_gives_up_and_the_sweep_retries(
    email_trigger: Callable[[str, str], Trigger],
) -> None:
    log, channel = await deliver_through_outage(email_trigger, failures=10_000, lease_s=0.5)
    assert channel.sends == 1
    assert log.finished == []  # left as claimed: the lease decides, as after a crash
