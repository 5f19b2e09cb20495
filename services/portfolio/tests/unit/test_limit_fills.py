"""Resting limit orders in :class:`Operations` with plain data and an in-memory store: a newly
rested order meets the latest quote (a tick that came during its commit fills it, one from
before it was placed does not), the book rebuilt at start queues nothing, and the fill task
logs (and counts) a failed fill and goes on to the next until its block ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Literal

import pytest
import structlog
from prometheus_client import REGISTRY
from tickwatch_devstack.testing import replay_tick, wait_until
from tickwatch_portfolio.accounting.domain import Account, Fill
from tickwatch_portfolio.ledger.operations import Operations, filling
from tickwatch_portfolio.ledger.store import OpenOrder
from tickwatch_portfolio.market.book import PriceBook
from tickwatch_portfolio.orders.domain import reservation

D = Decimal
SYMBOL = "BTC-USDT"
PLACED_AT = 1_000_000
FEE = D("0.001")


def open_order(order_id: int, side: Literal["buy", "sell"] = "buy", limit: str = "95") -> OpenOrder:
    held = reservation(D(1), D(limit), FEE) if side == "buy" else D(0)
    return OpenOrder(order_id, "u1", SYMBOL, side, D(1), D(limit), held, PLACED_AT)


@dataclass
class Row:
    order: OpenOrder
    status: str = "open"


class FakeTx:
    """What :meth:`Operations.fill_resting` uses of an ``AccountTx``."""

    def __init__(self, store: FakeStore, user_id: str) -> None:
        self.store = store
        self.user_id = user_id
        self.account = store.accounts[user_id]

    async def order_for_update(self, order_id: int) -> dict[str, Any] | None:
        row = self.store.rows.get(order_id)
        if row is None:
            return None
        return {"id": order_id, "status": row.status, "reserved": row.order.reserved}

    async def book_limit_fill(self, new: Account, order_id: int, fill: Fill) -> None:
        if order_id in self.store.fail_once:
            self.store.fail_once.discard(order_id)
            raise ConnectionError("connection lost mid-fill")
        self.store.accounts[self.user_id] = new
        self.store.rows[order_id].status = "filled"
        self.store.fills.append((order_id, fill))


class FakeStore:
    """The open orders and accounts of a ``LedgerStore``, in memory; an order id in
    ``fail_once`` makes its first fill raise (the transaction rolled back)."""

    def __init__(self, *orders: OpenOrder) -> None:
        self.rows = {o.id: Row(o) for o in orders}
        reserved = sum((o.reserved for o in orders), D(0))
        self.accounts = {"u1": Account(cash=D(0), reserved=reserved)}
        self.fail_once: set[int] = set()
        self.fills: list[tuple[int, Fill]] = []

    async def open_orders(self) -> list[OpenOrder]:
        return [r.order for r in self.rows.values() if r.status == "open"]

    @asynccontextmanager
    async def locked(self, user_id: str, key: str | None = None) -> AsyncIterator[FakeTx]:
        yield FakeTx(self, user_id)


def operations(store: FakeStore, book: PriceBook | None = None) -> Operations:
    return Operations(
        store,  # type: ignore[arg-type]
        book or PriceBook(),
        max_price_age_ms=30_000,
        fee_rate=FEE,
    )


def _fill_counts() -> tuple[float, float]:
    """The limit fills and the failed fills counted so far (the metrics are process-wide)."""
    fills = REGISTRY.get_sample_value("portfolio_fills_total", {"type": "limit"})
    failures = REGISTRY.get_sample_value("portfolio_limit_fill_failures_total")
    return fills or 0.0, failures or 0.0


def queued(ops: Operations) -> list[str]:
    out: list[str] = []
    while not ops.reached.empty():
        out.append(ops.reached.get_nowait().order_id)
    return out


def quote(book: PriceBook, price: str, ts: int) -> None:
    book.on_tick(replay_tick(SYMBOL, price, ts))


@pytest.mark.parametrize(("side", "price"), [("buy", "94"), ("buy", "95"), ("sell", "96")])
def test_a_tick_that_came_during_the_commit_fills_the_order_when_it_rests(
    side: Literal["buy", "sell"], price: str
) -> None:
    book = PriceBook()
    ops = operations(FakeStore(), book)
    quote(book, price, PLACED_AT + 5)  # after placed_at, before rest() ran: no order to reach
    ops.on_ticks([replay_tick(SYMBOL, price, PLACED_AT + 5)])
    ops.rest(open_order(1, side))
    assert queued(ops) == ["1"]
    assert "1" not in ops.limits


def test_the_latest_quote_from_before_the_order_was_placed_does_not_fill_it() -> None:
    book = PriceBook()
    ops = operations(FakeStore(), book)
    quote(book, "94", PLACED_AT - 1)
    ops.rest(open_order(1))
    assert queued(ops) == [] and "1" in ops.limits
    ops.on_ticks([replay_tick(SYMBOL, "94", PLACED_AT)])  # the next tick, through the same path
    assert queued(ops) == ["1"]


def test_a_latest_quote_that_does_not_reach_it_leaves_it_resting() -> None:
    book = PriceBook()
    ops = operations(FakeStore(), book)
    quote(book, "95.01", PLACED_AT + 5)
    ops.rest(open_order(1))
    ops.rest(open_order(2, "sell", "96"))
    assert queued(ops) == [] and {"1", "2"} <= set(o.order_id for o in ops.limits)


def test_resting_again_neither_re_adds_nor_re_queues() -> None:
    book = PriceBook()
    ops = operations(FakeStore(), book)
    ops.rest(open_order(1))
    quote(book, "94", PLACED_AT - 1)  # reaches it, but too old: it rests again
    ops.rest(open_order(1))
    assert queued(ops) == [] and len(ops.limits) == 1


def test_a_new_order_does_not_make_an_older_one_fill_on_the_quote_it_was_too_new_for() -> None:
    book = PriceBook()
    ops = operations(FakeStore(), book)
    quote(book, "94", PLACED_AT - 1)
    ops.rest(open_order(1))
    later = replace(open_order(2), placed_at_ms=PLACED_AT - 10)  # placed before that quote
    ops.rest(later)
    assert queued(ops) == ["2"]
    assert [o.order_id for o in ops.limits] == ["1"]


async def test_the_rebuild_at_start_rests_every_open_order_and_queues_none() -> None:
    store = FakeStore(open_order(1), open_order(2, "sell", "96"), open_order(3, limit="1"))
    ops = operations(store)  # no quote yet: the feed starts after the rebuild
    assert await ops.rebuild() == 3
    assert queued(ops) == [] and len(ops.limits) == 3
    ops.on_ticks([replay_tick(SYMBOL, "95", PLACED_AT)])
    assert queued(ops) == ["1"]


async def test_a_failed_fill_is_logged_and_the_task_fills_the_next_until_its_block_ends() -> None:
    store = FakeStore(open_order(1), open_order(2), open_order(3))
    store.fail_once.add(1)
    ops = operations(store)
    await ops.rebuild()
    before = _fill_counts()
    with structlog.testing.capture_logs() as logs:
        async with filling(ops) as task:
            ops.on_ticks([replay_tick(SYMBOL, "90", PLACED_AT)])  # reaches all three
            await wait_until(lambda: store.rows[3].status == "filled", what="the third fill")
            await ops.reached.join()
        assert task.cancelled()
    assert [order_id for order_id, _ in store.fills] == [2, 3]
    assert store.rows[1].status == "open"  # rolled back: still open, the next start rests it
    assert "1" not in ops.limits
    failed = [e for e in logs if e["event"] == "limit_fill_failed"]
    assert [(e["order_id"], e["log_level"]) for e in failed] == [("1", "error")]
    assert failed[0]["exc_info"] is True  # logged with its traceback
    assert [a - b for a, b in zip(_fill_counts(), before, strict=True)] == [2, 1]
    assert store.accounts["u1"] == Account(
        cash=D(0),  # each fill paid from its own reservation
        reserved=reservation(D(1), D(95), FEE),  # order 1's, not released
        holdings=store.accounts["u1"].holdings,
        fees_paid=2 * D("0.095"),
    )
    assert store.accounts["u1"].quantity(SYMBOL) == D(2)
