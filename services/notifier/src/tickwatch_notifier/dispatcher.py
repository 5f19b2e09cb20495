"""Runs deliveries: bounded concurrency, claim -> send -> record -> publish, retries, sweeps.

Concurrency is bounded twice: per destination (one mail server, SendGrid, or one webhook host)
and overall. A delivery first waits for its destination's slot, then for a global one, so a slow
destination holds at most ``max_per_destination`` of the global slots and the rest keep flowing.
A delivery is claimed in the log only once it holds both slots, so a lease never runs out while
it waits, and it keeps them until its outcome is recorded: at any instant at most
``max_concurrent`` deliveries are claimed without an outcome, and those are all that a crash can
repeat (a restart retries each once its lease has run out).

Outcomes: ``sent`` and ``failed`` are final; a transient failure below ``max_attempts`` becomes
``retrying`` with ``next_attempt_at`` = now + exponential backoff with jitter, and an in-process
timer picks it up then. Every outcome goes to notifications.status.v1 (a failure also to
notifications.dlq.v1) *after* the log records it; the ``published`` column plus the sweep make
that at-least-once even across a crash between the two. The sweep also finds due retries and
expired leases left by a crashed replica.

Every attempt's outcome is one log line once recorded (``delivery_sent``, ``delivery_retrying``,
``delivery_failed``, :func:`log_outcome`): the alert, trigger and channel, the attempt, how long
the send took and where it went, as far as a log may say (:func:`recipient_of`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import asyncpg
import structlog
from tickwatch_common.backoff import Backoff
from tickwatch_common.events import (
    NotificationDeadLetter,
    NotificationStatus,
    Trigger,
    TriggerChannel,
)
from tickwatch_common.events.base import now_ms
from tickwatch_common.kafka import Publisher
from tickwatch_common.topics import NOTIFICATIONS_DLQ, NOTIFICATIONS_STATUS

from tickwatch_notifier.channels import Channel, Outcome
from tickwatch_notifier.deliveries import DeliveryLog, Row
from tickwatch_notifier.metrics import (
    DELIVERIES,
    IN_FLIGHT,
    SEND_SECONDS,
    TRIGGER_TO_SENT_SECONDS,
)

log = structlog.get_logger(__name__)
# What a database restart raises at a statement: refused or reset connections, "shutting down"
# and "starting up" answers, and a pooled connection the restart broke mid-protocol.
OUTAGE = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


@dataclass(frozen=True)
class Limits:
    max_concurrent: int = 50
    max_per_destination: int = 20
    max_pending: int = 1000
    max_attempts: int = 8
    retry_base_s: float = 2.0
    retry_cap_s: float = 600.0
    lease_s: float = 60.0
    sweep_interval_s: float = 5.0


def retry_delay(attempts: int, base_s: float, cap_s: float) -> float:
    """Exponential backoff with jitter: uniform in [ceiling/2, ceiling], ceiling doubling per attempt."""
    ceiling = min(cap_s, base_s * 2 ** max(0, attempts - 1))
    return random.uniform(ceiling / 2, ceiling)


def channel_of(trigger: Trigger, name: str) -> TriggerChannel | None:
    return next((c for c in trigger.channels if c.type == name), None)


def recipient_of(channel: TriggerChannel | None) -> str | None:
    """Where a delivery goes, as far as a log line may say: an e-mail's domain (not the mailbox)
    and a webhook's host (not its path, query or user info, where secrets travel)."""
    if channel is None:
        return None
    if channel.to:
        return channel.to.rpartition("@")[2].lower() or None
    try:
        return urlsplit(channel.url or "").hostname
    except ValueError:
        return None


@dataclass(frozen=True)
class Attempt:
    """One attempt of one delivery, as its log line tells it."""

    trigger: Trigger
    name: str
    channel: TriggerChannel | None
    number: int
    send_s: float


def log_outcome(attempt: Attempt, outcome: Outcome, status: str, delay: float) -> None:
    fields = dict(
        alert_id=attempt.trigger.alert_id,
        event_id=attempt.trigger.event_id,
        channel=attempt.name,
        outcome=status,
        attempt=attempt.number,
        duration_ms=round(attempt.send_s * 1000, 2),
        recipient=recipient_of(attempt.channel),
    )
    if status == "sent":
        log.info("delivery_sent", **fields)
    elif status == "retrying":
        log.info("delivery_retrying", retry_in_s=round(delay, 3), detail=outcome.detail, **fields)
    else:
        log.warning("delivery_failed", detail=outcome.detail, **fields)


def without_secrets(trigger: Trigger) -> Trigger:
    channels = [c.model_copy(update={"secret": None}) for c in trigger.channels]
    return trigger.model_copy(update={"channels": channels})


class Dispatcher:
    def __init__(
        self,
        deliveries: DeliveryLog,
        publisher: Publisher,
        channels: dict[str, Channel],
        limits: Limits,
    ) -> None:
        self.log = deliveries
        self.publisher = publisher
        self.channels = channels
        self.limits = limits
        self._global = asyncio.Semaphore(limits.max_concurrent)
        self._per_destination: dict[str, asyncio.Semaphore] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._room = asyncio.Event()
        self._room.set()

    # ------------------------------------------------------------------ intake

    async def accept(self, triggers: Iterable[Trigger]) -> None:
        """Record each (trigger, channel) as pending, start them, and wait while too many are open.

        When this returns, every delivery of the batch is durably in the log: committing the
        batch's offsets can lose nothing.
        """
        items: list[tuple[Trigger, str]] = []
        seen: set[tuple[str, str]] = set()
        for trigger in triggers:
            for channel in trigger.channels:
                key = (trigger.event_id, channel.type)
                if key not in seen:  # one delivery per channel type and trigger
                    seen.add(key)
                    items.append((trigger, channel.type))
        if not items:
            return
        await self.log.record(items)
        for trigger, name in items:
            self.submit(trigger, name)
        while len(self._tasks) >= self.limits.max_pending:
            self._room.clear()
            await self._room.wait()

    def submit(self, trigger: Trigger, name: str) -> None:
        key = (trigger.event_id, name)
        if key in self._tasks:
            return
        task = asyncio.create_task(self._deliver(trigger, name))
        self._tasks[key] = task
        IN_FLIGHT.set(len(self._tasks))

        def done(_: asyncio.Task[None]) -> None:
            self._tasks.pop(key, None)
            IN_FLIGHT.set(len(self._tasks))
            if len(self._tasks) < self.limits.max_pending:
                self._room.set()

        task.add_done_callback(done)

    # ------------------------------------------------------------------ one delivery

    def _slot(self, destination: str) -> asyncio.Semaphore:
        sem = self._per_destination.get(destination)
        if sem is None:
            sem = self._per_destination[destination] = asyncio.Semaphore(
                self.limits.max_per_destination
            )
        return sem

    async def _deliver(self, trigger: Trigger, name: str) -> None:
        try:
            sender = self.channels[name]
            channel = channel_of(trigger, name)
            destination = sender.destination(channel) if channel else name
            async with self._slot(destination), self._global:
                claim = await self.log.claim(trigger.event_id, name, self.limits.lease_s)
                if claim is None:
                    return  # already sent, failed, in someone else's hands, or not yet due
                trigger, attempts = claim.trigger, claim.attempts
                channel = channel_of(trigger, name)
                started = time.perf_counter()
                if channel is None:
                    outcome = Outcome("permanent", f"trigger has no {name} channel")
                else:
                    with SEND_SECONDS.labels(name).time():
                        outcome = await sender.send(trigger, channel)
                attempt = Attempt(trigger, name, channel, attempts, time.perf_counter() - started)
                # Recorded before the slots are let go, so the deliveries claimed and without
                # an outcome (all that a crash can send twice) never exceed max_concurrent.
                status, delay = await self._settle(trigger, name, attempts, outcome)
                log_outcome(attempt, outcome, status, delay)
            await self._announce(trigger, name, attempts, outcome.detail, status, delay)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The row stays as it is (pending, or sending until its lease ends): the sweep retries.
            log.exception("delivery_error", event_id=trigger.event_id, channel=name)

    async def _settle(
        self, trigger: Trigger, name: str, attempts: int, outcome: Outcome
    ) -> tuple[str, float]:
        """Record the outcome in the delivery log (one statement); answer its status and, for
        ``retrying``, the delay before the next attempt."""
        delay = 0.0
        if outcome.result == "sent":
            await self._durably(
                lambda: self.log.finish(trigger.event_id, name, "sent", outcome.detail)
            )
            status = "sent"
            late_s = time.time() - trigger.triggered_at / 1000
            TRIGGER_TO_SENT_SECONDS.labels(name).observe(max(0.0, late_s))
        elif outcome.result == "transient" and attempts < self.limits.max_attempts:
            delay = retry_delay(attempts, self.limits.retry_base_s, self.limits.retry_cap_s)
            await self._durably(
                lambda: self.log.retry_later(trigger.event_id, name, delay, outcome.detail)
            )
            status = "retrying"
        else:
            await self._durably(
                lambda: self.log.finish(trigger.event_id, name, "failed", outcome.detail)
            )
            status = "failed"
        DELIVERIES.labels(name, status).inc()
        return status, delay

    async def _durably(self, write: Callable[[], Awaitable[None]]) -> None:
        """Record an outcome, retrying through a database outage (a PostgreSQL restart) for up
        to half the lease: an accepted send whose outcome is lost is sent again once its lease
        ends, so giving up early would turn a restart of the database into duplicates. Past
        that bound the claim may be someone else's, so the error goes up (``delivery_error``)."""
        backoff = Backoff(initial_s=0.1, cap_s=2.0)
        deadline = asyncio.get_running_loop().time() + self.limits.lease_s / 2
        while True:
            try:
                await write()
                return
            except OUTAGE as exc:
                delay = backoff.next_delay()
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise
                log.warning(
                    "outcome_write_retry", error=repr(exc)[:300], retry_in_s=round(delay, 2)
                )
                await asyncio.sleep(delay)

    async def _announce(
        self, trigger: Trigger, name: str, attempts: int, detail: str, status: str, delay: float
    ) -> None:
        # Published before the retry is scheduled: with a short backoff the next attempt's
        # status could otherwise reach the topic first, and "retrying" land after "sent".
        await self.publish(trigger, name, status, attempts, detail)
        if status == "retrying":
            self._schedule(delay, trigger, name)

    def _schedule(self, delay: float, trigger: Trigger, name: str) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(handle)
            self.submit(trigger, name)

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    async def publish(
        self, trigger: Trigger, name: str, status: str, attempts: int, detail: str
    ) -> None:
        if status == "failed":
            dead = NotificationDeadLetter(
                event_id=trigger.event_id,
                alert_id=trigger.alert_id,
                user_id=trigger.user_id,
                channel=name,  # type: ignore[arg-type]
                reason=detail or "failed",
                attempts=attempts,
                ts=now_ms(),
                trigger=without_secrets(trigger),
            )
            await self.publisher.publish(NOTIFICATIONS_DLQ, dead, key=trigger.event_id)
        event = NotificationStatus(
            event_id=trigger.event_id,
            alert_id=trigger.alert_id,
            user_id=trigger.user_id,
            channel=name,  # type: ignore[arg-type]
            status=status,  # type: ignore[arg-type]
            attempts=attempts,
            detail=detail,
            ts=now_ms(),
        )
        await self.publisher.publish(NOTIFICATIONS_STATUS, event, key=trigger.event_id)
        await self.log.mark_published(trigger.event_id, name, status)

    # ------------------------------------------------------------------ sweep

    async def sweep_once(self) -> None:
        for trigger, name in await self.log.due():
            self.submit(trigger, name)
        rows: list[Row] = await self.log.unpublished()
        for row in rows:
            if (row.event_id, row.channel) not in self._tasks:
                await self.publish(row.trigger, row.channel, row.status, row.attempts, row.detail)

    async def run_sweeper(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sweep_failed")
            await asyncio.sleep(self.limits.sweep_interval_s)

    async def close(self, grace_s: float = 10.0) -> None:
        """Let sends in flight finish (up to ``grace_s``), then cancel the rest."""
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        tasks = list(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*pending, return_exceptions=True)
