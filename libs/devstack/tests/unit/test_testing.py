"""The shared test code in ``tickwatch_devstack.testing`` that needs no servers."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest
from tickwatch_common.events import NotificationStatus, Trigger
from tickwatch_devstack.testing import TopicCollector, log_tail, replay_tick, wait_until


def test_a_replay_tick_splits_the_symbol_and_keeps_the_exact_price() -> None:
    tick = replay_tick("BTC-USDT", "67002.12345678", 1_000)
    assert (tick.base, tick.quote, tick.source) == ("BTC", "USDT", "replay")
    assert tick.price == Decimal("67002.12345678")
    assert (tick.ts_event, tick.ts_ingest) == (1_000, 1_000)
    assert tick.volume_24h is None and tick.change_24h_pct is None


def test_a_replay_tick_takes_its_ingest_time_and_24h_figures() -> None:
    tick = replay_tick(
        "ETH-USDT", "10.5", 1_000, ts_ingest=1_003, volume_24h="1234.5", change_24h_pct="-1.25"
    )
    assert tick.ts_ingest == 1_003
    assert (tick.volume_24h, tick.change_24h_pct) == (Decimal("1234.5"), Decimal("-1.25"))


async def test_wait_until_returns_once_the_predicate_holds() -> None:
    ready_at = time.monotonic() + 0.05
    await wait_until(lambda: time.monotonic() >= ready_at, timeout_s=5, what="the moment")


async def test_wait_until_names_what_it_waited_for_on_timeout() -> None:
    with pytest.raises(TimeoutError, match="the impossible"):
        await wait_until(lambda: False, timeout_s=0.05, what="the impossible")


async def test_wait_until_awaits_a_coroutine_predicate() -> None:
    calls: list[int] = []

    async def third_call() -> bool:
        calls.append(1)
        return len(calls) >= 3

    await wait_until(third_call, timeout_s=5, what="the third call")
    assert len(calls) == 3


async def test_wait_until_times_out_on_a_coroutine_predicate_that_never_holds() -> None:
    async def never() -> bool:
        return False

    with pytest.raises(TimeoutError, match="the query"):
        await wait_until(never, timeout_s=0.05, what="the query")


def test_received_answers_only_the_events_of_the_asked_type() -> None:
    collector = TopicCollector("127.0.0.1:1", [])
    status = NotificationStatus(
        event_id="e1", alert_id="a1", user_id="u1", channel="email", status="sent", attempts=1, ts=1
    )
    collector.events.append(status)
    assert collector.received(NotificationStatus) == [status]
    assert collector.received(Trigger) == []


def test_log_tail_answers_the_end_of_the_log_or_says_there_is_none(tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    log.write_text("a" * 10 + "end")
    assert log_tail(log, chars=3) == "end"
    assert log_tail(tmp_path / "missing.log") == "(no log)"
