"""The operations the internal API offers, each one locked transaction (see ``store.py``):
replay an Idempotency-Key's first answer, else judge with the pure core, book, and remember.

A market order fills at the price book's latest tick (never a client's price) when that tick is
fresh; every refusal is an :class:`~tickwatch_portfolio.problems.Answer` (422 naming the field,
409 with the amounts or the price's age), so the first answer to a key, refusal or not, is what
its retries get back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from tickwatch_portfolio.accounting.domain import (
    AccountingError,
    InsufficientCash,
    InsufficientQuantity,
    InvalidAmount,
    apply_fill,
    deposit,
    withdraw,
)
from tickwatch_portfolio.ledger.store import AccountTx, CashFlowKind, LedgerStore
from tickwatch_portfolio.market.book import PriceBook
from tickwatch_portfolio.orders.domain import (
    OrderRequest,
    StalePrice,
    check_order,
    fill_at,
    fresh_price,
)
from tickwatch_portfolio.problems import Answer, dec, invalid, problem

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
    ) -> None:
        self.store = store
        self.book = book
        self.max_price_age_ms = max_price_age_ms
        self.fee_rate = fee_rate
        self.clock = clock

    async def _idempotent(
        self,
        user_id: str,
        key: str | None,
        fingerprint: str,
        run: Callable[[AccountTx], Any],
    ) -> Answer:
        async with self.store.locked(user_id) as tx:
            if key is not None:
                first = await tx.replay(key)
                if first is not None:
                    if first[0] != fingerprint:
                        return invalid(
                            "Idempotency-Key", "Idempotency-Key was used for another request"
                        )
                    return first[1]
            answer: Answer = await run(tx)
            if key is not None:
                await tx.remember(key, fingerprint, answer)
            return answer

    async def place_order(
        self, user_id: str, request: OrderRequest, *, key: str | None, fingerprint: str
    ) -> Answer:
        async def run(tx: AccountTx) -> Answer:
            return await self._market_order(tx, request)

        return await self._idempotent(user_id, key, fingerprint, run)

    async def _market_order(self, tx: AccountTx, request: OrderRequest) -> Answer:
        rules = self.book.rules.get(request.symbol)
        if rules is None:
            return invalid("symbol", f"unknown symbol {request.symbol}")
        if not self.book.trading.get(request.symbol, False):
            return problem(409, f"{request.symbol} is not trading", symbol=request.symbol)
        if request.type != "market":
            return invalid("type", "only market orders are accepted yet")
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
            answer = _refusal(exc)
            order_id = await tx.book_rejected(request, str(exc))
            return problem(answer.status, str(exc), order_id=str(order_id), **_extras(answer))
        return Answer(201, await tx.book_fill(new, request, fill))

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
                return _refusal(exc)
            entry = await tx.book_cash(new, kind, amount)
            return Answer(
                201,
                {"id": str(entry), "kind": kind, "amount": dec(amount), "cash": dec(new.cash)},
            )

        return await self._idempotent(user_id, key, fingerprint, run)


def _extras(answer: Answer) -> dict[str, Any]:
    skip = {"type", "title", "status", "detail"}
    return {k: v for k, v in answer.body.items() if k not in skip}
