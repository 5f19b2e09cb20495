"""The engine in-process against the real broker and PostgreSQL: exactly once, across restarts and replicas."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from tickwatch_alert_engine.__main__ import running_alert_engine
from tickwatch_alert_engine.engine import trigger_event_id
from tickwatch_alert_engine.settings import Settings
from tickwatch_common.kafka import partition_for
from tickwatch_common.topics import SYMBOL_PARTITIONS
from tickwatch_devstack.testing import wait_until

pytestmark = pytest.mark.integration


def unique_symbol() -> str:
    return f"T{uuid.uuid4().hex[:7].upper()}-USDT"


def aid() -> str:
    return f"a-{uuid.uuid4().hex[:12]}"


def assert_sequences_up_to(last: int, fired: list[Any], alert: str) -> None:
    """Every sequence up to ``last`` fired with its deterministic event id, the last one once."""
    expected = {n: trigger_event_id(alert, n) for n in range(1, last + 1)}
    assert {t.sequence: t.event_id for t in fired} == expected
    assert [t.sequence for t in fired].count(last) == 1


async def assigned_with_alerts(
    worker: Any, harness: Any, alert: tuple[Any, ...], sentinel: tuple[str, str, str], **kw: Any
) -> None:
    """Wait for the assignment, publish ``alert`` (id, symbol, condition, target) and then the
    ``sentinel`` (id, symbol, above-target), and wait until the engine holds both. The
    sentinel's trigger later tells that every tick published before its own was handled."""
    await wait_until(worker.assigned.is_set, what="assignment")
    await harness.alert(*alert, **kw)
    await harness.alert(sentinel[0], sentinel[1], "above", sentinel[2])
    await wait_until(lambda: sentinel[0] in worker.engine.alerts, what="alerts loaded")


async def test_crossing_published_to_the_broker_fires_exactly_once(
    harness: Any, engine_settings: Settings
) -> None:
    symbol = unique_symbol()
    cross, sentinel = aid(), aid()
    async with running_alert_engine(engine_settings, serve_ops=False) as worker:
        await assigned_with_alerts(
            worker,
            harness,
            (cross, symbol, "crosses_up", "70000"),
            (sentinel, symbol, "90000"),
            note="breakout",
        )
        for price in ["69990", "70010", "70020", "69000", "69500"]:
            await harness.tick(symbol, price)
        await harness.tick(symbol, "90000")  # fires the sentinel: everything before is handled
        await wait_until(lambda: harness.fired(sentinel), what="sentinel trigger")

    [trigger] = harness.fired(cross)
    assert trigger.event_id == trigger_event_id(cross, 1)
    assert (trigger.symbol, trigger.condition, str(trigger.threshold), str(trigger.price)) == (
        symbol,
        "crosses_up",
        "70000",
        "70010",
    )
    assert trigger.note == "breakout"
    assert [c.to for c in trigger.channels] == ["trader@example.com"]
    # The crossing above 90000 is not a new crossing of 70000 (the price never went back below).
    conn = await asyncpg.connect(engine_settings.database_url)
    try:
        row = await conn.fetchrow(
            "SELECT sequence, armed FROM alert_engine.trigger_state WHERE alert_id = $1", cross
        )
        price = await conn.fetchval(
            "SELECT price::text FROM alert_engine.symbol_price WHERE symbol = $1", symbol
        )
    finally:
        await conn.close()
    assert (row["sequence"], row["armed"]) == (1, False)
    assert price == "90000"


async def test_restart_mid_stream_loses_and_duplicates_no_crossing(
    harness: Any, engine_settings: Settings
) -> None:
    symbol = unique_symbol()
    alert = aid()
    expected = 0

    async def crossings(n: int) -> None:
        nonlocal expected
        for _ in range(n):
            await harness.tick(symbol, "99")
            await harness.tick(symbol, "101")
            expected += 1

    async with running_alert_engine(engine_settings, serve_ops=False) as worker:
        await wait_until(worker.assigned.is_set, what="assignment")
        await harness.alert(alert, symbol, "crosses_up", "100", frequency="recurring")
        await wait_until(lambda: alert in worker.engine.alerts, what="alert loaded")
        await crossings(5)
        await wait_until(lambda: len(harness.fired(alert)) >= 2, what="first triggers")
    # Down: these ticks wait in the broker. The last price before the stop was 101.
    await harness.tick(symbol, "99")
    await harness.tick(symbol, "100.5")
    expected += 1
    await crossings(3)
    await harness.tick(symbol, "99.5")  # last price before the restart is below the target
    async with running_alert_engine(engine_settings, serve_ops=False) as worker:
        await wait_until(worker.assigned.is_set, what="assignment after restart")
        await harness.tick(symbol, "100")  # crosses from the durable last price 99.5
        expected += 1
        await crossings(2)
        await wait_until(
            lambda: len({t.event_id for t in harness.fired(alert)}) >= expected, what="all triggers"
        )

    fired = harness.fired(alert)
    assert sorted(t.sequence for t in fired) == list(range(1, expected + 1))
    assert len({t.event_id for t in fired}) == len(fired) == expected


async def test_two_replicas_split_partitions_and_fire_every_alert_once(
    harness: Any, engine_settings: Settings
) -> None:
    symbols: list[str] = []
    while len({partition_for(s, SYMBOL_PARTITIONS) for s in symbols}) < SYMBOL_PARTITIONS:
        symbols.append(unique_symbol())
    alerts = {symbol: aid() for symbol in symbols}
    async with (
        running_alert_engine(engine_settings, serve_ops=False) as one,
        running_alert_engine(engine_settings, serve_ops=False) as two,
    ):

        def split() -> bool:
            return (
                one.assigned.is_set()
                and two.assigned.is_set()
                and bool(one.owned)
                and bool(two.owned)
                and not (one.owned & two.owned)
                and one.owned | two.owned == set(range(SYMBOL_PARTITIONS))
            )

        await wait_until(split, timeout_s=45, what="two replicas sharing the partitions")
        for symbol, alert in alerts.items():
            await harness.alert(alert, symbol, "crosses_down", "50")
        await wait_until(
            lambda: all(a in one.engine.alerts or a in two.engine.alerts for a in alerts.values()),
            what="alerts loaded by their owners",
        )
        for symbol in symbols:
            await harness.tick(symbol, "51")
            await harness.tick(symbol, "49")
            await harness.tick(symbol, "51")
            await harness.tick(symbol, "49")
        await wait_until(
            lambda: all(harness.fired(a) for a in alerts.values()), what="every alert fired"
        )
        fired_by_one = sum(1 for a in alerts.values() if a in one.engine.alerts)
        assert 0 < fired_by_one < len(alerts)
        assert not set(one.engine.alerts) & set(two.engine.alerts)
    for alert in alerts.values():
        assert [t.sequence for t in harness.fired(alert)] == [1]


async def test_a_batch_that_fails_half_way_is_replayed_from_the_record(
    harness: Any, engine_settings: Settings
) -> None:
    """Triggers published, then the record fails: the replay republishes the same event id
    (deduplicated downstream) and the next crossing still gets the next sequence."""
    symbol = unique_symbol()
    alert = aid()
    async with running_alert_engine(engine_settings, serve_ops=False) as worker:
        await wait_until(worker.assigned.is_set, what="assignment")
        await harness.alert(alert, symbol, "crosses_up", "100", frequency="recurring")
        await wait_until(lambda: alert in worker.engine.alerts, what="alert loaded")
        save = worker.store.save_batch
        failures: list[int] = []

        async def flaky_save(*args: Any, **kw: Any) -> None:
            if args[0] and not failures:  # the first record that carries a fired alert
                failures.append(1)
                raise ConnectionError("database went away")
            await save(*args, **kw)

        worker.store.save_batch = flaky_save  # type: ignore[method-assign]
        await harness.tick(symbol, "99")
        await harness.tick(symbol, "101")
        await wait_until(
            lambda: failures and len(harness.fired(alert)) >= 2, what="replayed trigger"
        )
        await harness.tick(symbol, "99")
        await harness.tick(symbol, "102")
        await wait_until(lambda: any(t.sequence == 2 for t in harness.fired(alert)), what="second")

    assert_sequences_up_to(2, harness.fired(alert), alert)


@pytest.mark.parametrize("stop", ["graceful", "crash"])
async def test_a_pct_move_that_spans_a_restart_fires_exactly_once(
    harness: Any, engine_settings: Settings, stop: str
) -> None:
    """5 % within an hour: 100 before the restart, 105.5 after it. A graceful stop records the
    window at the stop; a crash (nothing flushed) replays the ticks after the last record."""
    symbol = unique_symbol()
    move, sentinel = aid(), aid()
    async with running_alert_engine(engine_settings, serve_ops=False) as worker:
        await assigned_with_alerts(
            worker,
            harness,
            (move, symbol, "pct_change", None),
            (sentinel, symbol, "1000"),
            pct="5",
            window_seconds=3600,
        )
        await harness.tick(symbol, "100")
        await wait_until(lambda: worker.engine.index.window_samples(symbol), what="first tick")
        await harness.tick(symbol, "101")
        await wait_until(
            lambda: worker.engine.index.last_price(symbol) == (Decimal("101"), harness.ts),
            what="second tick",
        )
        if stop == "crash":

            async def no_flush() -> None:
                return None

            worker.flush = no_flush  # type: ignore[method-assign]
    await harness.tick(symbol, "103")  # while the engine is down
    async with running_alert_engine(engine_settings, serve_ops=False) as worker:
        await wait_until(worker.assigned.is_set, what="assignment after restart")
        await harness.tick(symbol, "105.5")  # 5.5 % above the 100 from before the restart
        await harness.tick(symbol, "106")
        await harness.tick(symbol, "1000")
        await wait_until(lambda: harness.fired(sentinel), what="sentinel trigger")

    [trigger] = harness.fired(move)
    assert (trigger.condition, str(trigger.threshold), str(trigger.price)) == (
        "pct_change",
        "5",
        "105.5",
    )
    assert trigger.window_seconds == 3600 and trigger.event_id == trigger_event_id(move, 1)


async def test_a_batch_cancelled_between_publishing_and_recording_is_replayed_on_restart(
    harness: Any, engine_settings: Settings
) -> None:
    """SIGTERM cancels the consume task wherever it is. Cancelled after its trigger went out
    but before the record, the batch must be replayed (same event id), not checkpointed past
    by the flush on the way out, which would lose the fired state: the alert's next firing
    would then reuse the sequence, and its event id, and be dropped downstream as a duplicate."""
    symbol = unique_symbol()
    alert, sentinel = aid(), aid()
    async with running_alert_engine(engine_settings, serve_ops=False) as worker:
        await assigned_with_alerts(
            worker,
            harness,
            (alert, symbol, "crosses_up", "100"),
            (sentinel, symbol, "1000"),
            frequency="recurring",
        )
        save = worker.store.save_batch

        async def stuck_save(*args: Any, **kw: Any) -> None:
            if args[0]:  # the record of the firing: the process is stopped before it
                await asyncio.Event().wait()
            await save(*args, **kw)

        worker.store.save_batch = stuck_save  # type: ignore[method-assign]
        await harness.tick(symbol, "99")
        await harness.tick(symbol, "101")
        await wait_until(lambda: harness.fired(alert), what="trigger published")
        assert worker.task is not None
        worker.task.cancel()
    async with running_alert_engine(engine_settings, serve_ops=False) as worker:
        await wait_until(worker.assigned.is_set, what="assignment after restart")
        await harness.tick(symbol, "99")
        await harness.tick(symbol, "102")
        await harness.tick(symbol, "1000")
        await wait_until(lambda: harness.fired(sentinel), what="sentinel trigger")

    assert_sequences_up_to(2, harness.fired(alert), alert)
