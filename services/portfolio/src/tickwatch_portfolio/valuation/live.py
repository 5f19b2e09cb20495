"""Live valuation: the pure :class:`Valuer` and :class:`Conflator` fed by the ledger and the
market feed, emitting ``portfolio.valuations.v1``.

Holdings are loaded at start and set again after each committed change to an account (a fill,
a cash flow, a reservation, a reset); a tick revalues only the holders of its symbol and marks
them for the conflator, which a small periodic task drives with the clock (at most one event per
user per second, the value read when it goes out, so the latest wins). A user's own committed
change goes through the conflator too, waking the task: published at once when the user's last
event is a second old, else with the latest value when the second is up (an order a millisecond
does not publish an event a millisecond, as the contract's "at most once a second" says).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from decimal import Decimal
from typing import Protocol

import structlog
from tickwatch_common.background import background
from tickwatch_common.events import Tick, Valuation
from tickwatch_common.events.portfolio import HoldingValue
from tickwatch_common.topics import PORTFOLIO_VALUATIONS, Topic

from tickwatch_portfolio.accounting.domain import Account
from tickwatch_portfolio.ledger.operations import Clock, now_ms
from tickwatch_portfolio.metrics import VALUATION_FLUSH_SECONDS
from tickwatch_portfolio.problems import dec
from tickwatch_portfolio.valuation.domain import ZERO, Conflator, UserValuation, Valuer

log = structlog.get_logger(__name__)

FLUSH_INTERVAL_S = 0.1
"""How often the conflator is asked who is due (well under its one-second interval)."""


class Publishes(Protocol):
    """What the live valuation needs of :class:`tickwatch_common.kafka.Publisher`."""

    async def publish(self, topic: Topic, event: Valuation, *, key: str) -> None: ...


def _plain(value: Decimal) -> Decimal:
    """The same value without trailing zeros, written as the API writes it (``dec``)."""
    return Decimal(dec(value))


def valuation_event(value: UserValuation, ts: int) -> Valuation:
    """The event for ``value``; a holding whose symbol has no price yet is left out (the
    contract's price is a number)."""
    return Valuation(
        user_id=value.user_id,
        total_value=_plain(value.total_value),
        cash=_plain(value.cash),
        holdings=[
            HoldingValue(
                symbol=h.symbol,
                quantity=_plain(h.quantity),
                price=_plain(h.price),
                value=_plain(h.value),
                unrealized_pnl=_plain(h.unrealized_pnl),
            )
            for h in value.holdings
            if h.price is not None
        ],
        ts=ts,
    )


class LiveValuation:
    """The valuer, its conflator and the users to publish at once."""

    def __init__(self, publisher: Publishes, clock: Clock = now_ms) -> None:
        self.publisher = publisher
        self.clock = clock
        self.valuer = Valuer()
        self.conflator = Conflator()
        self._wake = asyncio.Event()
        self.published = 0

    def set_account(self, user_id: str, account: Account) -> None:
        """The account's committed state (cash free plus reserved, each holding's quantity and
        cost), replacing what the valuer held for that user."""
        valuer = self.valuer
        if user_id in valuer:
            for held in valuer.valuation(user_id).holdings:
                if held.symbol not in account.holdings:
                    valuer.set_holding(user_id, held.symbol, ZERO, ZERO)
        valuer.set_cash(user_id, account.cash + account.reserved)
        for symbol, holding in account.holdings.items():
            valuer.set_holding(user_id, symbol, holding.quantity, holding.cost)

    def load(self, accounts: Iterable[tuple[str, Account]]) -> int:
        """At start: every account, without publishing them (nothing changed yet)."""
        count = 0
        for user_id, account in accounts:
            self.set_account(user_id, account)
            count += 1
        self.valuer.take_dirty()
        return count

    def on_committed(self, user_id: str, account: Account) -> None:
        """After a user's own committed change: revalue, and publish as soon as the user's
        second allows."""
        self.set_account(user_id, account)
        self.valuer.dirty.discard(user_id)
        self.conflator.mark((user_id,))
        self._wake.set()

    async def on_ticks(self, ticks: Iterable[Tick]) -> None:
        for tick in ticks:
            self.valuer.on_tick(tick.symbol, Decimal(tick.price))
        self.conflator.mark(self.valuer.take_dirty())

    async def flush(self) -> int:
        """Publish the users the conflator says are due now; how many. A round with nobody due
        is not timed, so the histogram says what publishing valuations costs."""
        started = time.perf_counter()
        now = self.clock()
        self.conflator.mark(self.valuer.take_dirty())
        users = self.conflator.due(now)
        for user in users:
            event = valuation_event(self.valuer.valuation(user), now)
            await self.publisher.publish(PORTFOLIO_VALUATIONS, event, key=user)
        self.published += len(users)
        if users:
            VALUATION_FLUSH_SECONDS.observe(time.perf_counter() - started)
        return len(users)

    async def run(self) -> None:
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_INTERVAL_S)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("valuation_publish_failed")


@asynccontextmanager
async def valuing(live: LiveValuation) -> AsyncIterator[LiveValuation]:
    """The flush task running; cancelled on the way out."""
    async with background(live.run()):
        yield live
