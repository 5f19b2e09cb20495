"""The operations the internal API offers, each one locked transaction (see ``store.py``):
replay an Idempotency-Key's first answer, else judge with the pure core, book, and remember.

A market order fills at the price book's latest tick (never a client's price) when that tick is
fresh. A limit order rests: a buy reserves its cash (notional at the limit plus its fee), a sell
its quantity, in the same locked transaction that records it ``open``; once committed it joins the
in-memory :class:`~tickwatch_portfolio.orders.domain.LimitBook` (rebuilt from the open rows at
start) and meets the symbol's latest quote there and then, as a tick would (one may have come
while the commit was under way). A tick that reaches it fills it at its limit price in its own
transaction, which locks the order row (``FOR UPDATE``) and does nothing unless it is still
``open``: an order fills once even if two ticks race, a cancel races, or the service restarts.
Cancelling releases the reservation. Every refusal is an
:class:`~tickwatch_portfolio.problems.Answer` (422 naming the field, 409 with the amounts or the
price's age), so the first answer to a key, refusal or not, is what its retries get back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager, suppress
from decimal import Decimal
from typing import Any

import structlog
from tickwatch_common.background import background
from tickwatch_common.events import Tick

from tickwatch_portfolio.accounting.domain import (
    AccountingError,
    InsufficientCash,
    InsufficientQuantity,
    InvalidAmount,
    apply_fill,
    deposit,
    release,
    release_quantity,
    reserve,
    reserve_quantity,
    value_account,
    withdraw,
)
from tickwatch_portfolio.ledger.store import (
    AccountTx,
    CashFlowKind,
    LedgerStore,
    OpenOrder,
    StaleAccount,
    order_body,
)
from tickwatch_portfolio.market.book import PriceBook
from tickwatch_portfolio.metrics import FILLS, LIMIT_FILL_FAILURES, ORDERS
from tickwatch_portfolio.orders.domain import (
    LimitBook,
    OrderRequest,
    RestingOrder,
    StalePrice,
    check_order,
    fill_at,
    fresh_price,
    reservation,
)
from tickwatch_portfolio.problems import Answer, dec, invalid, problem

log = structlog.get_logger(__name__)

Clock = Callable[[], int]


def now_ms() -> int:
    return int(time.time() * 1000)


def _refusal(exc: AccountingError) -> Answer:
    """An accounting refusal as the API's 409 (or 422 for an invalid amount)."""
    if isinstance(exc, InsufficientQuantity):
        return problem(
            409,
            str(exc),
            symbol=exc.symbol,
            required=dec(exc.required),
            available=dec(exc.available),
        )
    if isinstance(exc, InsufficientCash):
        return problem(409, str(exc), required=dec(exc.required), available=dec(exc.available))
    if isinstance(exc, InvalidAmount):
        return invalid(exc.field, str(exc))
    return problem(409, str(exc))


class Operations:
    def __init__(
        self,
        store: LedgerStore,
        book: PriceBook,
        *,
        max_price_age_ms: int,
        fee_rate: Decimal,
        clock: Clock = now_ms,
        limits: LimitBook | None = None,
    ) -> None:
        self.store = store
        self.book = book
        self.limits = limits if limits is not None else LimitBook()
        self.max_price_age_ms = max_price_age_ms
        self.fee_rate = fee_rate
        self.clock = clock
        self.reached: asyncio.Queue[RestingOrder] = asyncio.Queue()
        """Resting orders a tick reached, for :meth:`fill_reached` (see :func:`filling`)."""

    async def _idempotent(
        self,
        user_id: str,
        key: str | None,
        fingerprint: str,
        run: Callable[[AccountTx], Any],
        *,
        one_statement: bool = True,
    ) -> Answer:
        """``run`` once against the account: without a key (and when ``run`` writes at most one
        statement), against the state this process holds if it holds it (one round trip); else,
        or if that state turns out stale, locked, replaying the key's first answer if any."""
        if key is None and one_statement:
            with suppress(StaleAccount):
                held: Answer | None = await self.store.with_held(user_id, run)
                if held is not None:
                    return held
        async with self.store.locked(user_id, key) as tx:
            if tx.first is not None:
                if tx.first[0] != fingerprint:
                    return invalid(
                        "Idempotency-Key", "Idempotency-Key was used for another request"
                    )
                return tx.first[1]
            answer: Answer = await run(tx)
            if key is not None:
                await tx.remember(key, fingerprint, answer)
            return answer

    async def place_order(
        self, user_id: str, request: OrderRequest, *, key: str | None, fingerprint: str
    ) -> Answer:
        async def run(tx: AccountTx) -> Answer:
            rules = self.book.rules.get(request.symbol)
            if rules is None:
                return invalid("symbol", f"unknown symbol {request.symbol}")
            if not self.book.trading.get(request.symbol, False):
                return problem(409, f"{request.symbol} is not trading", symbol=request.symbol)
            if request.type == "limit":
                return await self._limit_order(tx, request)
            return await self._market_order(tx, request)

        answer = await self._idempotent(user_id, key, fingerprint, run)
        ORDERS.labels(request.type, "accepted" if answer.status == 201 else "refused").inc()
        return answer

    async def _limit_order(self, tx: AccountTx, request: OrderRequest) -> Answer:
        rules = self.book.rules[request.symbol]
        if rejection := check_order(request, rules):
            return invalid(rejection.field, rejection.reason)
        assert request.limit_price is not None  # check_order refuses a limit order without one
        held_cash = Decimal(0)
        try:
            if request.side == "buy":
                held_cash = reservation(request.quantity, request.limit_price, self.fee_rate)
                new = reserve(tx.account, held_cash)
            else:
                new = reserve_quantity(tx.account, request.symbol, request.quantity)
        except AccountingError as exc:
            return await self._rejected(tx, request, exc)
        order, body = await tx.book_resting(new, request, held_cash)
        tx.after_commit.append(lambda: self.rest(order))
        return Answer(201, body)

    def rest(self, order: OpenOrder) -> None:
        """Put a committed open order in the in-memory book (once), then match it against the
        symbol's latest quote: a tick that came after the order's ``placed_at`` but before this
        ran (the commit's round trip) went by while the order was not yet in the book, and may
        have been the only one to reach it."""
        if str(order.id) in self.limits:
            return
        self.limits.add(
            RestingOrder(
                str(order.id),
                order.user_id,
                order.symbol,
                order.side,
                order.quantity,
                order.limit_price,
                order.placed_at_ms,
            )
        )
        quote = self.book.quotes.get(order.symbol)
        if quote is not None:
            self._match(order.symbol, quote.price, quote.ts_ms)

    async def rebuild(self) -> int:
        """Rest every open order PostgreSQL holds (at start, before the feed runs)."""
        orders = await self.store.open_orders()
        for order in orders:
            self.rest(order)
        return len(orders)

    def on_ticks(self, ticks: Iterable[Tick]) -> None:
        """Take the resting orders each tick reaches out of the book and queue them for
        :func:`filling`'s task (matching is in memory, so the feed never waits on PostgreSQL)."""
        for tick in ticks:
            self._match(tick.symbol, Decimal(tick.price), tick.ts_event)

    def _match(self, symbol: str, price: Decimal, ts_ms: int) -> None:
        """Queue the resting orders ``price`` (stamped ``ts_ms``) reaches; the one matching path
        of a tick and of a newly rested order. A price stamped before an order was placed
        (replayed at start, late from a slower source, or the quote held when it rests) does not
        fill it: the order rests again."""
        for order in self.limits.on_tick(symbol, price):
            if ts_ms < order.placed_at:
                self.limits.add(order)
                continue
            self.reached.put_nowait(order)

    async def fill_reached(self) -> None:
        """Fill the queued orders one transaction each, until cancelled. The queue holds at
        most the open orders (each leaves the book when queued). A fill that fails is logged
        and the order left out of the book (still open in PostgreSQL: the next start rests it
        again)."""
        while True:
            order = await self.reached.get()
            try:
                await self.fill_resting(order)
            except Exception:
                LIMIT_FILL_FAILURES.inc()
                log.exception("limit_fill_failed", order_id=order.order_id)
            finally:
                self.reached.task_done()

    async def fill_resting(self, order: RestingOrder) -> bool:
        """Fill ``order`` at its limit price unless its row is no longer open (then False)."""
        async with self.store.locked(order.user_id) as tx:
            row = await tx.order_for_update(int(order.order_id))
            if row is None or row["status"] != "open":
                return False
            fill = fill_at(
                order.symbol, order.side, order.quantity, order.limit_price, self.fee_rate
            )
            if order.side == "buy":
                new = apply_fill(tx.account, fill, reserved=row["reserved"])
            else:
                new = apply_fill(tx.account, fill, reserved_quantity=order.quantity)
            await tx.book_limit_fill(new, row["id"], fill)
        FILLS.labels("limit").inc()
        return True

    async def cancel(self, user_id: str, order_id: int) -> Answer:
        """Cancel a resting order: its reservation released; another user's order, or none,
        404; one that is no longer open (filled, cancelled, rejected) 409."""
        async with self.store.locked(user_id) as tx:
            row = await tx.order_for_update(order_id)
            if row is None:
                return problem(404, f"no order {order_id}")
            if row["status"] != "open":
                return problem(
                    409, f"order {order_id} is {row['status']}", order_status=row["status"]
                )
            if row["side"] == "buy":
                new = release(tx.account, row["reserved"])
            else:
                new = release_quantity(tx.account, row["symbol"], row["quantity"])
            cancelled = await tx.book_cancelled(new, order_id)

            def forget() -> None:
                self.limits.cancel(str(order_id))

            tx.after_commit.append(forget)
        return Answer(200, order_body(cancelled))

    async def reset(self, user_id: str, *, key: str | None, fingerprint: str) -> Answer:
        """Start the user's account over in one locked transaction (see
        :meth:`AccountTx.book_reset`); its open orders leave the in-memory book once committed."""

        async def run(tx: AccountTx) -> Answer:
            cancelled = await tx.book_reset(self.store.starting_cash)

            def forget() -> None:
                for order_id in cancelled:
                    self.limits.cancel(str(order_id))

            tx.after_commit.append(forget)
            return Answer(
                200,
                {
                    "cash": dec(self.store.starting_cash),
                    "quote_currency": self.store.quote_currency,
                    "cancelled_orders": [str(i) for i in cancelled],
                },
            )

        return await self._idempotent(user_id, key, fingerprint, run, one_statement=False)

    async def _rejected(self, tx: AccountTx, request: OrderRequest, exc: AccountingError) -> Answer:
        answer = _refusal(exc)
        order_id = await tx.book_rejected(request, str(exc))
        return problem(answer.status, str(exc), order_id=str(order_id), **_extras(answer))

    async def _market_order(self, tx: AccountTx, request: OrderRequest) -> Answer:
        rules = self.book.rules[request.symbol]
        try:
            price = fresh_price(
                request.symbol,
                self.book.quotes.get(request.symbol),
                self.clock(),
                self.max_price_age_ms,
            )
        except StalePrice as exc:
            return problem(
                409,
                str(exc),
                symbol=exc.symbol,
                price_age_s=None if exc.age_s is None else dec(exc.age_s),
                max_price_age_s=dec(exc.max_age_s),
            )
        if rejection := check_order(request, rules, price):
            return invalid(rejection.field, rejection.reason)
        fill = fill_at(request.symbol, request.side, request.quantity, price, self.fee_rate)
        try:
            new = apply_fill(tx.account, fill)
        except AccountingError as exc:
            return await self._rejected(tx, request, exc)
        body = await tx.book_fill(new, request, fill)
        tx.after_commit.append(FILLS.labels("market").inc)
        return Answer(201, body)

    async def move_cash(
        self,
        user_id: str,
        kind: CashFlowKind,
        amount: Decimal,
        *,
        key: str | None,
        fingerprint: str,
    ) -> Answer:
        async def run(tx: AccountTx) -> Answer:
            try:
                new = (deposit if kind == "deposit" else withdraw)(tx.account, amount)
            except AccountingError as exc:
                await tx.confirm()  # refused against the committed state, not a stale one
                return _refusal(exc)
            value_before = value_account(tx.account, self.book.prices()).total_value
            entry = await tx.book_cash(new, kind, amount, value_before)
            return Answer(
                201,
                {"id": str(entry), "kind": kind, "amount": dec(amount), "cash": dec(new.cash)},
            )

        return await self._idempotent(user_id, key, fingerprint, run)


def _extras(answer: Answer) -> dict[str, Any]:
    skip = {"type", "title", "status", "detail"}
    return {k: v for k, v in answer.body.items() if k not in skip}


def filling(operations: Operations) -> AbstractAsyncContextManager[asyncio.Task[None]]:
    """The limit-fill task (:meth:`Operations.fill_reached`) running; cancelled on the way out."""
    return background(operations.fill_reached())
