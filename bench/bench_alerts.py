"""Alert matching and tick-to-trigger latency (``make bench`` runs this; ``--quick`` for a short run).

1. In process, the matching core with 1,000,000 active alerts over 1,000 symbols (a mix of every
   condition): microseconds per tick when nothing fires, and the cost of each fire (the core's
   ``Fire`` alone, and the engine's full ``Trigger`` event).
2. Through Apache Kafka (the embedded broker ``start_stack`` starts, or the one named by
   ``KAFKA_BOOTSTRAP_SERVERS``; other servers likewise): the alert engine as its own process with
   its default settings, ticks published at 5,000 per second, and the time from publishing a tick
   to receiving its trigger on alerts.triggered.v1 (p50 / p99); then with the notifier too, the
   time from publishing a tick to the mail catcher accepting its email.
3. The same engine at a low rate on few markets (``--low-rate`` ticks per second over 5 symbols,
   runs of ticks on one symbol), where aiokafka's prefetch shows: while a partition's records are
   still buffered, aiokafka leaves that partition out of the fetch it sends next, so a tick that
   arrives on it soon after waits for that fetch to come back: until a record arrives on another
   partition, or ``fetch_max_wait_ms`` at most. At 5,000 ticks/s every fetch comes back at once;
   here the engine's fetch wait is what bounds the latency.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

from bench_idle import TICKS_PER_S, read_sample
from tickwatch_alert_engine.engine import Engine
from tickwatch_alert_engine.matching import AlertIndex, Rule
from tickwatch_common.events import AlertState, Tick
from tickwatch_devstack.infra import Stack

CONDITIONS = ("above", "below", "crosses_up", "crosses_down", "pct_change")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# ---------------------------------------------------------------- 1. in-process matching


def build_index(n_alerts: int, n_symbols: int, rng: random.Random) -> tuple[AlertIndex, list[str]]:
    """Every alert is out of reach of the ticks below: above at +5..50 %, below at -5..-50 %,
    crossings on both sides of the price (so a tick takes the bisecting path, not the shortcut),
    moves of 5..50 % within 1 h."""
    symbols = [f"S{i:04d}-USDT" for i in range(n_symbols)]
    index = AlertIndex()
    up = [Decimal(100 + p).quantize(Decimal("0.01")) for p in range(5, 51)]
    down = [Decimal(100 - p).quantize(Decimal("0.01")) for p in range(5, 51)]
    pcts = [Decimal(p) for p in range(5, 51)]
    for i in range(n_alerts):
        symbol = symbols[i % n_symbols]
        condition = CONDITIONS[(i // n_symbols) % len(CONDITIONS)]
        # Distinct thresholds per alert (as real users' are), from a fine grid.
        jitter = Decimal(rng.randrange(0, 10_000)) / 10_000
        if condition == "above":
            rule = Rule(f"a{i}", symbol, condition, target=rng.choice(up) + jitter)
        elif condition == "below":
            rule = Rule(f"a{i}", symbol, condition, target=rng.choice(down) - jitter)
        elif condition in ("crosses_up", "crosses_down"):
            side = rng.choice((up, down))
            target = rng.choice(side) + (jitter if side is up else -jitter)
            rule = Rule(f"a{i}", symbol, condition, target=target)
        else:
            rule = Rule(f"a{i}", symbol, "pct_change", pct=rng.choice(pcts), window_s=3600)
        index.upsert(rule)
    return index, symbols


def timed_collection() -> float:
    started = time.perf_counter()
    gc.collect()
    return time.perf_counter() - started


def bench_matching(n_alerts: int, n_symbols: int, n_ticks: int) -> None:
    rng = random.Random(7)
    started = time.perf_counter()
    index, symbols = build_index(n_alerts, n_symbols, rng)
    print(
        f"matching: {len(index):,} alerts over {n_symbols:,} symbols indexed in "
        f"{time.perf_counter() - started:.1f} s"
    )
    full = timed_collection()
    gc.freeze()  # as the engine's settle_heap() does after each rebuild
    frozen = timed_collection()
    gc.unfreeze()
    print(
        f"gc:       a full collection with the index in memory takes {full * 1e3:,.0f} ms; "
        f"after gc.freeze() {frozen * 1e3:,.1f} ms"
    )
    # Ticks wander within +-1 % of 100: nothing fires.
    prices = [Decimal(100) + Decimal(rng.randrange(-100, 101)) / 100 for _ in range(4096)]
    ts = 1_800_000_000_000
    for symbol in symbols:  # a first price per symbol, so crossings are evaluated
        index.on_tick(symbol, Decimal(100), ts)
    gc.disable()
    try:
        fired = 0
        started = time.perf_counter()
        for i in range(n_ticks):
            ts += 1
            fired += len(index.on_tick(symbols[i % n_symbols], prices[i & 4095], ts))
        elapsed = time.perf_counter() - started
    finally:
        gc.enable()
    assert fired == 0, fired
    print(
        f"matching: {elapsed / n_ticks * 1e6:.2f} us per tick when nothing fires "
        f"({n_ticks:,} ticks, {n_ticks / elapsed:,.0f} ticks/s on one core)"
    )

    # Fires: one symbol per tick jumps to +10 %, firing its above/crosses_up alerts up to 110.
    sample = symbols[: min(200, n_symbols)]
    fires = 0
    started = time.perf_counter()
    for symbol in sample:
        ts += 1
        fires += len(index.on_tick(symbol, Decimal(110), ts))
    elapsed = time.perf_counter() - started
    per_tick = elapsed / len(sample)
    print(
        f"matching: {fires:,} fires in {len(sample)} ticks: {elapsed / fires * 1e6:.2f} us per fire "
        f"(core: index update + Fire), {per_tick * 1e3:.2f} ms per tick firing {fires // len(sample)}"
    )

    # The engine's full cost per fire: a Trigger event with its channels, event id and note.
    engine = Engine()
    n = 20_000
    for i in range(n):
        engine.apply_change(
            f"e{i}",
            AlertState(
                alert_id=f"e{i}",
                user_id="u",
                version=1,
                symbol="ENG-USDT",
                condition="above",
                target_price=Decimal(100) + Decimal(i) / 1000,
                email="u@example.com",
                note="note",
                updated_at=ts,
            ),
        )
    tick = Tick(
        symbol="ENG-USDT",
        base="ENG",
        quote="USDT",
        source="replay",
        price=Decimal(200),
        ts_event=ts,
        ts_ingest=ts,
    )
    started = time.perf_counter()
    triggers = engine.on_tick(tick)
    elapsed = time.perf_counter() - started
    assert len(triggers) == n
    print(
        f"engine:   {elapsed / n * 1e6:.2f} us per fire including the Trigger event ({n:,} in one tick)"
    )


# ---------------------------------------------------------------- 2. through the broker


def broker_cpu_s(stack: Stack) -> float:
    """CPU seconds the embedded broker has used so far (0 for a broker named by the environment)."""
    for server in stack.servers:
        if server.name == "kafka":
            sample = read_sample(server.proc.pid)
            return sample.cpu_ticks / TICKS_PER_S if sample else 0.0
    return 0.0


async def bench_latency(
    rate: int,
    seconds: float,
    n_symbols: int,
    data_dir: Path,
    *,
    environ: dict[str, str],
    warmup_s: float,
    low_rate: int,
) -> None:
    """Phase 1: engine only (tick -> trigger). Phase 2: the engine at ``low_rate`` ticks/s on
    5 symbols, in runs on one symbol. Phase 3: engine + notifier + the mail catcher (tick ->
    email accepted by SMTP), on other symbols whose crossing alerts have an email.
    Each phase streams ``warmup_s`` unmeasured first (JIT, connection pools, caches)."""
    import email
    import email.policy

    from aiokafka import AIOKafkaConsumer, TopicPartition
    from tickwatch_common.events import Trigger
    from tickwatch_common.kafka import ensure_topics, kafka_producer
    from tickwatch_common.settings import KafkaSettings
    from tickwatch_common.topics import ALERT_CHANGES, ALERTS_TRIGGERED, TICKS
    from tickwatch_devstack.infra import create_database, free_port, start_stack
    from tickwatch_devstack.services import service_process

    # The broker as production runs it: the full JIT (C2), not the embedded default's C1-only
    # (cheaper idle, about a tenth of the throughput under this load).
    os.environ.setdefault("APACHE_KAFKA_JVM_OPTS", "-XX:TieredStopAtLevel=4")
    stack = await asyncio.to_thread(start_stack, data_dir, environ=environ)
    try:
        await ensure_topics(stack.kafka_bootstrap_servers)
        server = stack.database_url.rsplit("/", 1)[0] + "/postgres"
        database_url = await create_database(server, f"bench_{uuid.uuid4().hex[:8]}")
        settings = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
        run = uuid.uuid4().hex[:6].upper()
        symbols = [f"L{run}{i:03d}-USDT" for i in range(n_symbols)]
        mail_symbols = [f"M{run}{i:03d}-USDT" for i in range(20)] if stack.mail_dir else []
        low_symbols = [f"R{run}{i:03d}-USDT" for i in range(5)]
        sent_at: dict[tuple[str, int], tuple[float, int]] = {}  # (perf_counter, time_ns)
        latencies: list[float] = []
        email_sent_ns: dict[str, int] = {}  # event_id -> when its tick was published

        # The measuring reader waits up to 5 ms per fetch: a trigger that lands on the partition
        # it has just read waits for its fetch in flight (aiokafka's prefetch, see the docstring),
        # so the figures include up to 5 ms of its own; polling every 1 ms instead loaded the
        # broker enough to double the p99 it was measuring.
        reader = AIOKafkaConsumer(
            bootstrap_servers=stack.kafka_bootstrap_servers, group_id=None, fetch_max_wait_ms=5
        )
        await reader.start()
        tps = [TopicPartition(ALERTS_TRIGGERED.name, p) for p in range(ALERTS_TRIGGERED.partitions)]
        reader.assign(tps)
        for tp, end in (await reader.end_offsets(tps)).items():
            reader.seek(tp, end)

        async def collect() -> None:
            async for record in reader:
                now = time.perf_counter()
                if record.value is None:
                    continue
                t = Trigger.model_validate_json(record.value)
                started = sent_at.pop((t.symbol, t.ts_event), None)
                if started is None:
                    continue
                if t.channels:
                    email_sent_ns[t.event_id] = started[1]
                else:
                    latencies.append(now - started[0])

        collector = asyncio.create_task(collect())
        env = {
            **os.environ,
            **stack.env(),
            "DATABASE_URL": database_url,
            "ALERT_ENGINE_GROUP": f"bench-{run}",
            "NOTIFIER_GROUP": f"bench-notifier-{run}",
            "NOTIFIER_OFFSET_RESET": "latest",
            "KAFKA_SESSION_TIMEOUT_MS": "3000",
            "KAFKA_HEARTBEAT_INTERVAL_MS": "300",
            "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        }
        async with kafka_producer(settings, linger_ms=1) as publisher:
            ts = int(time.time() * 1000)
            # Per symbol: one recurring crossing at 100 (fires on every probe tick) and 99
            # alerts that never fire, so the index is not trivially small.
            for symbol in symbols + low_symbols + mail_symbols:
                for j in range(100):
                    alert_id = f"{symbol}-{j}"
                    state = AlertState(
                        alert_id=alert_id,
                        user_id="bench",
                        version=1,
                        symbol=symbol,
                        condition="crosses_up" if j == 0 else "above",
                        target_price=Decimal(100) if j == 0 else Decimal(200 + j),
                        frequency="recurring" if j == 0 else "once",
                        channels=["email"] if j == 0 and symbol in mail_symbols else [],
                        email=f"{symbol.lower()}@bench.test",
                        updated_at=ts,
                    )
                    await publisher.send(ALERT_CHANGES, state, key=alert_id, partition_key=symbol)
            await publisher.producer.flush()

            async def stream(names: list[str], seconds: float, every: int) -> tuple[int, float]:
                """Ticks at ``rate`` over ``names``; every ``every``-th tick of each symbol
                (staggered) crosses 100 upwards from below, the rest wander between 95 and 98."""
                nonlocal ts
                interval = 0.01
                per_slot = max(1, int(rate * interval))
                acks = []
                started = time.perf_counter()
                count = 0
                for slot in range(int(seconds / interval)):
                    delay = started + slot * interval - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    for k in range(per_slot):
                        ts += 1
                        index = count % len(names)
                        symbol = names[index]
                        probe = (
                            count >= len(names)
                            and (count // len(names) + index) % every == every - 1
                        )
                        price = Decimal("101") if probe else Decimal("95") + Decimal(k % 30) / 10
                        tick = Tick(
                            symbol=symbol,
                            base=symbol.split("-")[0],
                            quote="USDT",
                            source="replay",
                            price=price,
                            ts_event=ts,
                            ts_ingest=int(time.time() * 1000),
                        )
                        if probe:
                            sent_at[(symbol, ts)] = (time.perf_counter(), time.time_ns())
                        acks.append(await publisher.send(TICKS, tick, key=symbol))
                        count += 1
                    if len(acks) > 2000:
                        await asyncio.gather(*acks)
                        acks.clear()
                await asyncio.gather(*acks)
                return count, count / (time.perf_counter() - started)

            async def stream_runs(names: list[str], seconds: float, length: int) -> int:
                """Ticks at ``low_rate``, ``length`` in a row on one symbol before the next,
                alternating 95 and 101 so that every second tick of a run crosses 100 upwards
                (a probe) shortly after a tick on the same partition."""
                nonlocal ts
                interval = 1 / low_rate
                acks = []
                started = time.perf_counter()
                for n in range(int(seconds * low_rate)):
                    delay = started + n * interval - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    ts += 1
                    symbol = names[(n // length) % len(names)]
                    probe = n % 2 == 1
                    tick = Tick(
                        symbol=symbol,
                        base=symbol.split("-")[0],
                        quote="USDT",
                        source="replay",
                        price=Decimal("101") if probe else Decimal("95"),
                        ts_event=ts,
                        ts_ingest=int(time.time() * 1000),
                    )
                    if probe:
                        sent_at[(symbol, ts)] = (time.perf_counter(), time.time_ns())
                    acks.append(await publisher.send(TICKS, tick, key=symbol))
                await asyncio.gather(*acks)
                return int(seconds * low_rate)

            async def settle() -> None:
                """Until every probe so far has its trigger (or 30 s)."""
                deadline = time.monotonic() + 30
                while sent_at and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)

            async def settle_mail() -> None:
                """Until every emailing trigger so far has its email (or 60 s)."""
                await settle()
                deadline = time.monotonic() + 60
                while (  # noqa: ASYNC110
                    stack.mail_dir is not None
                    and len(list(stack.mail_dir.glob("*.eml"))) < len(email_sent_ns)
                    and time.monotonic() < deadline
                ):
                    await asyncio.sleep(0.1)

            port = free_port()
            with service_process("alert-engine", env, port, log_path=data_dir / "engine.log"):
                await stream(symbols, warmup_s, 50)
                await settle()
                sent_at.clear()
                latencies.clear()
                broker_before = broker_cpu_s(stack)
                count, achieved = await stream(symbols, seconds, 50)  # 100 triggers/s
                broker_used = broker_cpu_s(stack) - broker_before
                expected = len(sent_at) + len(latencies)
                await settle()
                if os.environ.get("BENCH_ENGINE_METRICS"):  # the engine's own view, for diagnosis
                    import aiohttp

                    async with (
                        aiohttp.ClientSession() as http,
                        http.get(f"http://127.0.0.1:{port}/metrics") as resp,
                    ):
                        for line in (await resp.text()).splitlines():
                            if "tick_to_trigger" in line or "handle_seconds" in line:
                                print("  engine:", line)
                if latencies:
                    ms = [v * 1000 for v in latencies]
                    print(
                        f"latency: {count:,} ticks at {achieved:,.0f}/s over {n_symbols} symbols "
                        f"({n_symbols * 100:,} alerts), {len(ms):,}/{expected:,} triggers: tick -> "
                        f"alerts.triggered.v1 p50 {statistics.median(ms):.1f} ms, "
                        f"p99 {percentile(ms, 99):.1f} ms, max {max(ms):.1f} ms"
                    )
                else:
                    print("latency: no triggers received")
                if broker_used > 0:
                    print(
                        f"broker:   {broker_used / count * 1e6:.0f} us of the JVM's CPU per tick "
                        f"({broker_used / seconds * 100:.0f} % of a core at {achieved:,.0f}/s)"
                    )
                await stream_runs(low_symbols, warmup_s, 4)
                await settle()
                sent_at.clear()
                latencies.clear()
                count = await stream_runs(low_symbols, seconds * 2, 4)
                expected = len(sent_at) + len(latencies)
                await settle()
                if latencies:
                    ms = [v * 1000 for v in latencies]
                    print(
                        f"latency at a low rate: {count:,} ticks at {low_rate}/s over "
                        f"{len(low_symbols)} symbols in runs of 4, {len(ms):,}/{expected:,} "
                        f"triggers: tick -> alerts.triggered.v1 p50 {statistics.median(ms):.1f} ms, "
                        f"p99 {percentile(ms, 99):.1f} ms, max {max(ms):.1f} ms"
                    )
                else:
                    print("latency at a low rate: no triggers received")
                if mail_symbols and stack.mail_dir:
                    notifier_port = free_port()
                    with service_process(
                        "notifier", env, notifier_port, log_path=data_dir / "notifier.log"
                    ):
                        await stream(mail_symbols, warmup_s, 100)
                        await settle_mail()
                        sent_at.clear()
                        email_sent_ns.clear()
                        for path in stack.mail_dir.glob("*.eml*"):
                            path.unlink()
                        # 5,000 ticks/s again, 50 of them firing an email each second.
                        count, achieved = await stream(mail_symbols, min(seconds, 10), 100)
                        expected = len(sent_at) + len(email_sent_ns)
                        mail_dir = stack.mail_dir
                        await settle_mail()
                        if os.environ.get("BENCH_ENGINE_METRICS"):
                            import aiohttp

                            async with (
                                aiohttp.ClientSession() as http,
                                http.get(f"http://127.0.0.1:{notifier_port}/metrics") as resp,
                            ):
                                for line in (await resp.text()).splitlines():
                                    if ("send_seconds" in line or "handle_seconds" in line) and (
                                        "_sum" in line or "_count" in line
                                    ):
                                        print("  notifier:", line)
                    email_ms = []
                    for path in mail_dir.glob("*.eml"):
                        accepted_ns = int(path.name.split("-", 1)[0])  # the catcher's clock
                        msg = email.message_from_bytes(
                            path.read_bytes(), policy=email.policy.default
                        )
                        event_id = str(msg["X-Tickwatch-Event-Id"])
                        if event_id in email_sent_ns:
                            email_ms.append((accepted_ns - email_sent_ns[event_id]) / 1e6)
                    if email_ms:
                        print(
                            f"email: {count:,} ticks at {achieved:,.0f}/s over "
                            f"{len(mail_symbols)} symbols, {len(email_ms):,}/{expected:,} emails: "
                            f"tick -> email accepted by SMTP p50 {statistics.median(email_ms):.1f}"
                            f" ms, p99 {percentile(email_ms, 99):.1f} ms, max {max(email_ms):.1f} ms"
                        )
                    else:
                        print("email: no emails received")
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
        await reader.stop()
    finally:
        stack.stop()
        for name in ("engine.log", "notifier.log"):
            if (data_dir / name).exists():
                shutil.copy(data_dir / name, Path(tempfile.gettempdir()) / f"bench-alerts-{name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100k alerts, 3 s of broker traffic")
    parser.add_argument("--skip-broker", action="store_true")
    parser.add_argument("--skip-matching", action="store_true", help="only the broker phases")
    parser.add_argument(
        "--low-rate", type=int, default=20, help="ticks per second of phase 3 (default 20)"
    )
    args = parser.parse_args()
    n_alerts = 100_000 if args.quick else 1_000_000
    if not args.skip_matching:
        bench_matching(n_alerts, 1_000, 200_000)
    if args.skip_broker:
        return
    gc.collect()  # the million alerts above are garbage now; do not let them pause the clock
    seconds, warmup_s = (3, 1) if args.quick else (15, 3)

    data_dir = Path(tempfile.mkdtemp(prefix="tickwatch-bench-alerts-"))
    try:
        asyncio.run(
            bench_latency(
                5_000,
                seconds,
                100,
                data_dir,
                environ=dict(os.environ),
                warmup_s=warmup_s,
                low_rate=args.low_rate,
            )
        )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
