"""One chaos run, from empty folder to verdict: servers, services, seeding, stream, faults, count.

See the package docstring for what it proves and how. Waits are for conditions, each with a
deadline; the only fixed waits are the fault windows themselves (Redis down, SMTP refusing) and
the seeded pauses before each fault, which are the plan, not a guess at how long something takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from tickwatch_common.events import Trigger
from tickwatch_common.kafka import Publisher, client_options, ensure_topics
from tickwatch_common.topics import ALERTS_TRIGGERED, ALL_TOPICS, NOTIFICATIONS_DLQ, TICKS

from tickwatch_devstack.chaos.cluster import (
    Broker,
    Services,
    restart_postgres,
    start_redis_again,
)
from tickwatch_devstack.chaos.oracle import Firing, Oracle, WatchedAlert
from tickwatch_devstack.chaos.plan import Fault, Plan, level
from tickwatch_devstack.chaos.receivers import SmtpServer, WebhookReceiver
from tickwatch_devstack.chaos.tally import (
    Heal,
    Outcome,
    TriggerRecord,
    count_channel,
    count_triggers,
    history_mismatches,
)
from tickwatch_devstack.infra import Server, create_database, free_port, start_postgres, start_redis
from tickwatch_devstack.provision import migrate_all
from tickwatch_devstack.services import SERVICES
from tickwatch_devstack.testing import replay_tick

PASSWORD = "chaos correct horse battery"
_ALERTS_GAUGE = re.compile(r"^alert_engine_alerts (\S+)$", re.MULTILINE)


class Run:
    def __init__(self, plan: Plan, seed: int, work: Path, out: TextIO) -> None:
        self.plan, self.seed, self.work, self.out = plan, seed, work, out
        self.outcome = Outcome(plan.name, seed)
        self.t0 = time.monotonic()
        self.broker = Broker(work / "kafka", free_port())
        self.pg: Server | None = None
        self.redis: Server | None = None
        self.smtp = SmtpServer(free_port())
        self.hooks = WebhookReceiver()
        self.hook_port = free_port()
        self.database_url = ""
        self.services: Services | None = None
        self.alerts: list[WatchedAlert] = []
        self.owner_token: dict[str, str] = {}  # alert id -> its owner's access token
        self.oracle = Oracle([])
        self.in_flight: set[tuple[str, str]] = set()
        self.streaming = False
        self.swung = asyncio.Event()  # set whenever a tick the broker took fires alerts
        self.closing = False
        self.killing: set[str] = set()
        self._producer: AIOKafkaProducer | None = None

    # ------------------------------------------------------------------ small helpers

    def say(self, text: str) -> None:
        print(f"chaos [{time.monotonic() - self.t0:6.1f} s] {text}", file=self.out, flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    async def until(
        self, probe: Callable[[], Awaitable[bool]], timeout_s: float, interval_s: float = 0.25
    ) -> float | None:
        """Seconds until ``probe`` answers True, or None after ``timeout_s``."""
        started = time.monotonic()
        while True:
            with contextlib.suppress(Exception):
                if await probe():
                    return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                return None
            await asyncio.sleep(interval_s)

    def owed(self) -> set[Firing]:
        return set(self.oracle.expected)

    def caught_up(self, owed: set[Firing]) -> bool:
        mails = {d.firing for d in self.smtp.counter.snapshot()}
        hooks = {d.firing for d in self.hooks.deliveries}
        return owed <= mails and owed <= hooks

    # ------------------------------------------------------------------ set-up

    async def start_servers(self) -> None:
        server = await asyncio.to_thread(self.broker.start)
        self.say(f"Apache Kafka on {self.broker.bootstrap} in {server.started_s:.1f} s")
        self.pg = await asyncio.to_thread(start_postgres, self.work / "pg", free_port())
        self.database_url = await create_database(
            f"postgresql://postgres@127.0.0.1:{self.pg.port}/postgres", "tickwatch"
        )
        self.redis = await asyncio.to_thread(start_redis, self.work / "redis", free_port())
        self.smtp.start()
        await self.hooks.start(self.hook_port)
        await ensure_topics(self.broker.bootstrap)
        for outcome in await migrate_all(self.database_url):
            if outcome.error:
                raise RuntimeError(f"migrations of {outcome.service}: {outcome.error}")
        self.say("PostgreSQL, Redis, SMTP, webhook receiver, topics and migrations ready")

    def environments(self) -> dict[str, dict[str, str]]:
        assert self.redis is not None
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("KAFKA_", "SMTP_", "NOTIFIER_", "ALERT", "GATEWAY_"))
            and k not in {"DATABASE_URL", "REDIS_URL", "SYMBOLS", "SENDGRID_API_KEY"}
        }
        base = {
            **inherited,
            "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "KAFKA_ENABLE_IDEMPOTENCE": "true",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": f"redis://127.0.0.1:{self.redis.port}/0",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.smtp.port),
            "JWT_SECRET": secrets.token_urlsafe(48),
            "INTERNAL_API_SECRET": secrets.token_urlsafe(48),
            "PYTHONUNBUFFERED": "1",
        }
        symbols = ",".join(self.plan.symbol(i) for i in range(self.plan.symbols))
        extra = {
            "gateway": {
                "GATEWAY_HOST": "127.0.0.1",
                "GATEWAY_OPS_PORT": str(free_port()),
                "SYMBOLS": f"BTC-USDT,ETH-USDT,{symbols}",
                "RATE_LIMIT_DEFAULT": "1000000/minute",
                "RATE_LIMIT_AUTH": "100000/minute",
                "ALERTS_ALLOW_PRIVATE_WEBHOOKS": "true",
                "ACCESS_TOKEN_TTL_S": "3600",
            },
            "ingestor": {
                "MARKET_SOURCES": "replay",
                "BACKFILL_ON_START": "false",
                "SYMBOLS": "BTC-USDT,ETH-USDT",
            },
            "notifier": {
                "NOTIFIER_ALLOW_PRIVATE_WEBHOOKS": "true",
                "NOTIFIER_LEASE_S": str(self.plan.notifier_lease_s),
                "PUBLIC_BASE_URL": "http://chaos.test",
                "MAIL_FROM": "Tickwatch <alerts@chaos.test>",
            },
        }
        return {name: {**base, **extra.get(name, {})} for name in SERVICES}

    async def start_services(self, http: aiohttp.ClientSession) -> None:
        ports = {name: free_port() for name in SERVICES}
        self.services = Services(self.environments(), ports, self.work / "logs", self.work)
        for name in SERVICES:
            self.services.start(name)
        took = await self.until(lambda: self._all_ready(http), 120, 0.2)
        if took is None:
            unready = await self.services.unready(http)
            raise RuntimeError(f"services not ready within 120 s: {', '.join(unready)}")
        self.say(f"five services ready in {took:.1f} s (logs: {self.work / 'logs'})")

    async def _all_ready(self, http: aiohttp.ClientSession) -> bool:
        assert self.services is not None
        return not await self.services.unready(http)

    async def seed_alerts(self, http: aiohttp.ClientSession) -> None:
        """Users and recurring ``crosses_up`` alerts (e-mail and webhook), through the API."""
        assert self.services is not None
        api = f"http://127.0.0.1:{self.services.ports['gateway']}/api/v1"
        tokens = []
        for u in range(self.plan.users):
            address = f"chaos-{u}@example.com"
            creds = {"email": address, "password": PASSWORD}
            await _call(http, "POST", f"{api}/auth/register", creds, expect=201)
            login = await _call(http, "POST", f"{api}/auth/login", creds, expect=200)
            tokens.append(str(login["access_token"]))
        gate = asyncio.Semaphore(8)

        async def create(s: int, j: int) -> WatchedAlert:
            token = tokens[(s * self.plan.alerts_per_symbol + j) % self.plan.users]
            body = {
                "symbol": self.plan.symbol(s),
                "condition": "crosses_up",
                "target_price": str(self.plan.threshold(j)),
                "frequency": "recurring",
                "cooldown_seconds": self.plan.cooldown_s,
                "channels": ["email", "webhook"],
                "webhook_url": f"http://127.0.0.1:{self.hook_port}/hook",
                "note": f"chaos {s}/{j}",
            }
            async with gate:
                made = await _call(http, "POST", f"{api}/alerts", body, expect=201, token=token)
            alert_id = str(made["id"])
            self.owner_token[alert_id] = token
            return WatchedAlert(
                alert_id, self.plan.symbol(s), self.plan.threshold(j), self.plan.cooldown_s
            )

        started = time.monotonic()
        self.alerts = list(
            await asyncio.gather(
                *(
                    create(s, j)
                    for s in range(self.plan.symbols)
                    for j in range(self.plan.alerts_per_symbol)
                )
            )
        )
        self.oracle = Oracle(self.alerts)
        self.say(
            f"{len(self.alerts)} alerts of {self.plan.users} users created in "
            f"{time.monotonic() - started:.1f} s"
        )
        metrics = f"http://127.0.0.1:{self.services.ports['alert-engine']}/metrics"

        async def indexed() -> bool:
            async with http.get(metrics, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                match = _ALERTS_GAUGE.search(await resp.text())
            return match is not None and float(match.group(1)) >= len(self.alerts)

        took = await self.until(indexed, 90)
        if took is None:
            raise RuntimeError("the alert engine did not hold every alert within 90 s")
        self.say(f"the engine holds every alert ({took:.1f} s after the last was created)")

    # ------------------------------------------------------------------ the tick stream

    async def _producer_publisher(self) -> Publisher:
        if self._producer is None:
            producer = AIOKafkaProducer(
                **client_options(self.broker.bootstrap),
                acks="all",
                enable_idempotence=True,
                linger_ms=0,
                request_timeout_ms=5000,
            )
            try:
                await asyncio.wait_for(producer.start(), 10)
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return Publisher(self._producer)

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)

    async def publish_until_acked(self, symbol: str, price: str, ts: int) -> None:
        """The same tick until the broker has it: a resent copy repeats its price and time,
        so it can never make a crossing of its own."""
        tick = replay_tick(symbol, price, ts, ts_ingest=int(time.time() * 1000))
        backoff = 0.2
        while True:
            try:
                publisher = await self._producer_publisher()
                await asyncio.wait_for(publisher.publish(TICKS, tick, key=symbol), 10)
                return
            except Exception:
                await self._drop_producer()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def stream(self) -> None:
        """Every symbol ticks at its level every ``tick_interval_s``; the oracle sees each tick
        once the broker has acknowledged it, in order."""
        phases = self.plan.phases(self.seed)
        started = time.monotonic()
        clocks = [0] * self.plan.symbols
        next_round = started
        while self.streaming:
            elapsed = time.monotonic() - started
            for i, phase in enumerate(phases):
                symbol = self.plan.symbol(i)
                price = level(self.plan.period_s, phase, elapsed)
                clocks[i] = max(int(time.time() * 1000), clocks[i] + 1)
                await self.publish_until_acked(symbol, str(price), clocks[i])
                if self.oracle.on_tick(symbol, price, clocks[i]):
                    self.swung.set()
                self.outcome.ticks += 1
            next_round = max(next_round + self.plan.tick_interval_s, time.monotonic())
            await asyncio.sleep(max(0.0, next_round - time.monotonic()))

    async def watchdog(self) -> None:
        """A service that dies by itself is a finding: noted, and restarted as a supervisor
        would, so the run goes on."""
        assert self.services is not None
        while not self.closing:
            for name, code in self.services.exited().items():
                if name not in self.killing:
                    self.outcome.notes.append(
                        f"{name} exited by itself with code {code} at {self.elapsed():.0f} s"
                    )
                    self.say(f"{name} exited by itself ({code}): restarting it")
                    self.services.start(name)
            await asyncio.sleep(0.5)

    # ------------------------------------------------------------------ faults

    async def sending_rows(self) -> set[tuple[str, str]]:
        """The notifier's deliveries in state ``sending``: right after a kill -9, exactly the
        sends that were in flight when it died."""
        conn = await asyncpg.connect(self.database_url, timeout=10)
        try:
            rows = await conn.fetch(
                "SELECT event_id, channel FROM notifier.delivery WHERE status = 'sending'"
            )
        finally:
            await conn.close()
        return {(str(r["event_id"]), str(r["channel"])) for r in rows}

    async def open_rows(self) -> int:
        conn = await asyncpg.connect(self.database_url, timeout=10)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM notifier.delivery"
                    " WHERE status IN ('pending', 'sending', 'retrying')"
                )
            )
        finally:
            await conn.close()

    async def sample_unready(self, http: aiohttp.ClientSession, seen: set[str]) -> None:
        """Who turns unready while a fault lasts: a service that stays ready through a broker
        outage is not telling the truth."""
        assert self.services is not None
        while True:
            with contextlib.suppress(Exception):
                seen.update(await self.services.unready(http))
            await asyncio.sleep(0.5)

    async def inflict(self, fault: Fault, heal: Heal) -> None:
        assert self.services is not None and self.pg is not None and self.redis is not None
        if fault.kind == "kill":
            self.killing.add(fault.target)
            try:
                self.services.kill(fault.target)
                if fault.target == "notifier":
                    try:
                        rows = await self.sending_rows()
                        heal.in_flight = len(rows)
                        self.in_flight |= rows
                        self.outcome.in_flight_total += len(rows)
                    except Exception as exc:
                        self.outcome.notes.append(f"sends in flight unobservable: {exc!r}")
                self.services.start(fault.target)
            finally:
                self.killing.discard(fault.target)
        elif fault.kind == "broker":
            self.broker.kill()
            server = await asyncio.to_thread(self.broker.start)
            self.say(f"  broker back in {server.started_s:.1f} s")
        elif fault.kind == "postgres":
            self.pg = await asyncio.to_thread(restart_postgres, self.pg)
        elif fault.kind == "redis":
            await asyncio.to_thread(self.redis.stop)
            await asyncio.sleep(fault.duration_s)  # the fault's window, from the plan
            self.redis = await asyncio.to_thread(start_redis_again, self.redis)
        elif fault.kind == "smtp":
            self.smtp.counter.fail_for(fault.duration_s)
            await asyncio.sleep(fault.duration_s)  # the fault's window, from the plan

    async def apply(self, fault: Fault, http: aiohttp.ClientSession) -> Heal:
        assert self.services is not None
        heal = Heal(fault.label, round(self.elapsed(), 1))
        self.say(f"fault: {fault.label}")
        seen_unready: set[str] = set()
        sampler = asyncio.create_task(self.sample_unready(http, seen_unready))
        try:
            await self.inflict(fault, heal)
        finally:
            sampler.cancel()
        heal.unready_during = ", ".join(sorted(seen_unready))
        owed = self.owed()
        ready, caught = await asyncio.gather(
            self.until(lambda: self._all_ready(http), self.plan.heal_timeout_s),
            self.until(_const(self.caught_up, owed), self.plan.heal_timeout_s),
        )
        heal.ready_s, heal.caught_up_s = ready, caught
        if ready is None:
            heal.unready = ", ".join(await self.services.unready(http))
        self.say(
            f"  ready again after {_fmt(ready)} s, caught up with {len(owed)} firings after "
            f"{_fmt(caught)} s" + (f"; still unready: {heal.unready}" if heal.unready else "")
        )
        return heal

    async def faults(self, http: aiohttp.ClientSession) -> None:
        plan = self.plan.faults(self.seed)
        self.say("faults in this order: " + ", ".join(f.label for f in plan))
        for fault in plan:
            await asyncio.sleep(fault.pause_s)  # the seeded moment of this fault
            if fault.kind == "kill":
                self.swung.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.swung.wait(), self.plan.period_s)
                await asyncio.sleep(fault.into_burst_s)
            self.outcome.heals.append(await self.apply(fault, http))

    async def drain(self) -> None:
        owed = self.owed()
        self.say(f"stream stopped: {len(owed)} firings owed; waiting for the last deliveries")

        async def quiet() -> bool:
            return self.caught_up(owed) and await self.open_rows() == 0

        took = await self.until(quiet, self.plan.drain_timeout_s, 0.5)
        if took is None:
            self.say(f"  not drained within {self.plan.drain_timeout_s:.0f} s; counting anyway")
        else:
            self.say(f"  drained in {took:.1f} s")

    # ------------------------------------------------------------------ counting

    async def reader(self) -> AIOKafkaConsumer:
        """A group-less consumer, retried while the broker is still coming back from a fault."""
        deadline = time.monotonic() + self.plan.count_reserve_s / 2
        while True:
            consumer = AIOKafkaConsumer(
                **client_options(self.broker.bootstrap), group_id=None, enable_auto_commit=False
            )
            try:
                await consumer.start()
                return consumer
            except Exception:
                await consumer.stop()
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1.0)

    async def read_triggers(self) -> list[TriggerRecord]:
        consumer = await self.reader()
        records: list[TriggerRecord] = []
        try:
            tps = [
                TopicPartition(ALERTS_TRIGGERED.name, p) for p in range(ALERTS_TRIGGERED.partitions)
            ]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            deadline = time.monotonic() + 30
            while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
                if time.monotonic() > deadline:
                    raise TimeoutError("alerts.triggered.v1 not read to its end within 30 s")
                batch = await consumer.getmany(*tps, timeout_ms=500)
                for messages in batch.values():
                    for m in messages:
                        if m.value is None:
                            continue
                        t = Trigger.model_validate_json(m.value)
                        records.append(TriggerRecord(t.event_id, t.alert_id, t.sequence, t.price))
        finally:
            await consumer.stop()
        return records

    async def dead_letters(self) -> dict[str, int]:
        consumer = await self.reader()
        try:
            names = [t.dlq for t in ALL_TOPICS] + [NOTIFICATIONS_DLQ.name]
            known = await consumer.topics()  # also fetches the metadata of every topic
            found: dict[str, int] = {}
            for name in names:
                if name not in known:
                    continue
                parts = consumer.partitions_for_topic(name) or set()
                tps = [TopicPartition(name, p) for p in parts]
                if not tps:
                    continue
                end = await consumer.end_offsets(tps)
                start = await consumer.beginning_offsets(tps)
                n = sum(end[tp] - start[tp] for tp in tps)
                if n:
                    found[name] = n
            return found
        finally:
            await consumer.stop()

    async def history(self, http: aiohttp.ClientSession) -> dict[str, int]:
        """Each alert's number of events at the gateway, as its owner reads them."""
        assert self.services is not None
        api = f"http://127.0.0.1:{self.services.ports['gateway']}/api/v1"
        gate = asyncio.Semaphore(10)

        async def total(alert_id: str) -> tuple[str, int]:
            async with gate:
                page = await _call(
                    http,
                    "GET",
                    f"{api}/alerts/{alert_id}/events?per_page=1",
                    None,
                    expect=200,
                    token=self.owner_token[alert_id],
                )
            return alert_id, int(page["total"])

        return dict(await asyncio.gather(*(total(a.alert_id) for a in self.alerts)))

    async def count(self, http: aiohttp.ClientSession) -> None:
        expected = list(self.oracle.expected)
        self.outcome.channels = [
            count_channel("email", expected, self.smtp.counter.snapshot(), self.in_flight),
            count_channel("webhook", expected, list(self.hooks.deliveries), self.in_flight),
        ]
        self.outcome.triggers = count_triggers(expected, await self.read_triggers())
        self.outcome.dlq = await self.dead_letters()
        owed = {a.alert_id: self.oracle.per_alert[a.alert_id] for a in self.alerts}
        mismatches: dict[str, tuple[int, int]] = {}

        async def settled() -> bool:
            nonlocal mismatches
            mismatches = history_mismatches(owed, await self.history(http))
            return not mismatches

        await self.until(settled, 20, 1.0)
        self.outcome.history_checked = len(owed)
        self.outcome.history_mismatches = mismatches
        if self.smtp.counter.unreadable or self.hooks.unreadable:
            self.outcome.notes.append(
                f"unreadable deliveries: {self.smtp.counter.unreadable} e-mails, "
                f"{self.hooks.unreadable} webhook calls"
            )
        self.outcome.notes.append(
            f"SMTP answered 451 to {self.smtp.counter.refused} messages during its window"
        )

    # ------------------------------------------------------------------ the whole run

    async def main(self) -> Outcome:
        async with aiohttp.ClientSession() as http:
            try:
                async with asyncio.timeout(self.plan.deadline_s - self.plan.count_reserve_s):
                    await self.start_servers()
                    await self.start_services(http)
                    await self.seed_alerts(http)
                    self.streaming = True
                    stream = asyncio.create_task(self.stream())
                    watchdog = asyncio.create_task(self.watchdog())
                    try:
                        await self.faults(http)
                        self.streaming = False
                        await asyncio.wait({stream}, timeout=30)
                        await self.drain()
                    finally:
                        self.streaming = False
                        stream.cancel()
                        watchdog.cancel()
            except TimeoutError:
                self.outcome.problems.append(
                    f"the global deadline of {self.plan.deadline_s:.0f} s ran out before the count"
                )
            except Exception as exc:
                self.outcome.problems.append(f"the run broke off: {exc!r}")
                self.say(f"the run broke off: {exc!r}")
            if self.alerts:
                try:
                    async with asyncio.timeout(self.plan.count_reserve_s):
                        await self.count(http)
                except Exception as exc:
                    self.outcome.problems.append(f"counting broke off: {exc!r}")
        self.outcome.elapsed_s = self.elapsed()
        return self.outcome

    async def close(self) -> None:
        self.closing = True
        await self._drop_producer()
        if self.services is not None:
            await asyncio.to_thread(self.services.stop_all)
        await self.hooks.stop()
        with contextlib.suppress(Exception):
            self.smtp.stop()
        for server in (self.redis, self.pg, self.broker.server):
            if server is not None:
                await asyncio.to_thread(server.stop)


def _const(
    check: Callable[[set[Firing]], bool], owed: set[Firing]
) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return check(owed)

    return probe


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


async def _call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any,
    *,
    expect: int,
    token: str | None = None,
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(
        method, url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=15)
    ) as resp:
        text = await resp.text()
        if resp.status != expect:
            raise RuntimeError(f"{method} {url} answered {resp.status}: {text[:300]}")
        return await resp.json(content_type=None)


async def chaos(plan: Plan, seed: int, out: TextIO = sys.stdout, keep: bool = False) -> Outcome:
    """Run ``plan`` in a new temporary folder; kept afterwards when the run failed or ``keep``."""
    from tickwatch_devstack.chaos.tally import failures, render

    work = Path(tempfile.mkdtemp(prefix=f"tickwatch-chaos-{plan.name}-"))
    run = Run(plan, seed, work, out)
    try:
        outcome = await run.main()
    finally:
        await run.close()
    print(render(outcome), file=out, flush=True)
    if failures(outcome) or keep:
        print(f"chaos: logs and data kept in {work}", file=out, flush=True)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return outcome
