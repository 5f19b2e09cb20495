"""The ledger in PostgreSQL: load an account's state, apply the pure core, write it back.

Every operation is one transaction that first locks the user's ``accounts`` row
(``SELECT ... FOR UPDATE``): a user's operations run one at a time, so fifty concurrent sells of
one holding are judged one after another against the quantity the previous one left, and never
oversell. The rules are :mod:`tickwatch_portfolio.accounting.domain`'s; this module only reads
and writes. An account is created on first use with PORTFOLIO_STARTING_CASH booked as its
opening deposit.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Literal

import asyncpg

from tickwatch_portfolio.accounting.domain import Account, Fill, Holding
from tickwatch_portfolio.orders.domain import OrderRequest
from tickwatch_portfolio.problems import Answer, dec

OrderStatus = Literal["open", "filled", "cancelled", "rejected"]
CashFlowKind = Literal["deposit", "withdrawal"]


@dataclass(frozen=True, slots=True)
class TradeRow:
    id: int
    order_id: int | None
    symbol: str
    side: str
    quantity: Decimal
    price: Decimal
    fee: Decimal
    executed_at: datetime


class AccountTx:
    """One user's account, locked for the length of a transaction: ``account`` is its state as
    loaded; each ``book_*`` writes the new state with its ledger entry."""

    def __init__(self, conn: asyncpg.Connection, user_id: str, account: Account) -> None:
        self.conn = conn
        self.user_id = user_id
        self.account = account

    async def replay(self, key: str) -> tuple[str, Answer] | None:
        """The answer first given under ``key``, with that request's fingerprint."""
        row = await self.conn.fetchrow(
            "SELECT fingerprint, status, body FROM idempotency_keys WHERE user_id = $1 AND key = $2",
            self.user_id,
            key,
        )
        if row is None:
            return None
        return row["fingerprint"], Answer(row["status"], json.loads(row["body"]))

    async def remember(self, key: str, fingerprint: str, answer: Answer) -> None:
        await self.conn.execute(
            "INSERT INTO idempotency_keys (user_id, key, fingerprint, status, body)"
            " VALUES ($1, $2, $3, $4, $5::jsonb)",
            self.user_id,
            key,
            fingerprint,
            answer.status,
            json.dumps(answer.body),
        )

    async def _save(self, new: Account) -> None:
        old = self.account
        await self.conn.execute(
            "UPDATE accounts SET cash = $2, reserved = $3, realized_pnl = $4, fees_paid = $5,"
            " sell_fees = $6, net_deposits = $7, updated_at = now() WHERE user_id = $1",
            self.user_id,
            new.cash,
            new.reserved,
            new.realized_pnl,
            new.fees_paid,
            new.sell_fees,
            new.net_deposits,
        )
        for symbol in old.holdings.keys() - new.holdings.keys():
            await self.conn.execute(
                "DELETE FROM holdings WHERE user_id = $1 AND symbol = $2", self.user_id, symbol
            )
        for symbol, holding in new.holdings.items():
            if old.holdings.get(symbol) == holding:
                continue
            await self.conn.execute(
                "INSERT INTO holdings (user_id, symbol, quantity, cost, avg_buy_price)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, symbol) DO UPDATE SET"
                " quantity = $3, cost = $4, avg_buy_price = $5, updated_at = now()",
                self.user_id,
                symbol,
                holding.quantity,
                holding.cost,
                holding.avg_cost,
            )
        self.account = new

    async def book_cash(self, new: Account, kind: CashFlowKind, amount: Decimal) -> int:
        """Write ``new`` and its deposit or withdrawal; answers the entry's id."""
        await self._save(new)
        entry: int = await self.conn.fetchval(
            "INSERT INTO deposits (user_id, amount, kind) VALUES ($1, $2, $3) RETURNING id",
            self.user_id,
            amount,
            kind,
        )
        return entry

    async def book_fill(self, new: Account, request: OrderRequest, fill: Fill) -> dict[str, Any]:
        """Write ``new``, the filled order and its trade; answers the order as the API shows it."""
        await self._save(new)
        order = await self.conn.fetchrow(
            "INSERT INTO orders (user_id, symbol, side, type, quantity, limit_price, status,"
            " fill_price, fee) VALUES ($1, $2, $3, $4, $5, $6, 'filled', $7, $8)"
            " RETURNING id, created_at",
            self.user_id,
            request.symbol,
            request.side,
            request.type,
            request.quantity,
            request.limit_price,
            fill.price,
            fill.fee,
        )
        trade = await self.conn.fetchrow(
            "INSERT INTO trades (user_id, symbol, side, quantity, price, fee, order_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id, executed_at",
            self.user_id,
            fill.symbol,
            fill.side,
            fill.quantity,
            fill.price,
            fill.fee,
            order["id"],
        )
        return {
            "id": str(order["id"]),
            "symbol": request.symbol,
            "side": request.side,
            "type": request.type,
            "quantity": dec(request.quantity),
            "status": "filled",
            "fill_price": dec(fill.price),
            "fee": dec(fill.fee),
            "notional": dec(fill.notional),
            "trade_id": str(trade["id"]),
            "created_at": _iso(order["created_at"]),
        }

    async def book_rejected(self, request: OrderRequest, reason: str) -> int:
        """Record an order the ledger refused (short of cash or quantity)."""
        order_id: int = await self.conn.fetchval(
            "INSERT INTO orders (user_id, symbol, side, type, quantity, limit_price, status,"
            " reason) VALUES ($1, $2, $3, $4, $5, $6, 'rejected', $7) RETURNING id",
            self.user_id,
            request.symbol,
            request.side,
            request.type,
            request.quantity,
            request.limit_price,
            reason,
        )
        return order_id


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LedgerStore:
    """Accounts, holdings, orders and the ledger in schema ``portfolio``."""

    def __init__(self, pool: asyncpg.Pool, starting_cash: Decimal, quote_currency: str) -> None:
        self.pool = pool
        self.starting_cash = starting_cash
        self.quote_currency = quote_currency

    async def _open(self, conn: asyncpg.Connection, user_id: str) -> None:
        """Create the account on first use, its paper cash booked as the opening deposit (a
        concurrent first use waits on the key and then does nothing)."""
        created = await conn.fetchval(
            "INSERT INTO accounts (user_id, quote_currency, cash, net_deposits)"
            " VALUES ($1, $2, $3, $3) ON CONFLICT (user_id) DO NOTHING RETURNING true",
            user_id,
            self.quote_currency,
            self.starting_cash,
        )
        if created and self.starting_cash > 0:
            await conn.execute(
                "INSERT INTO deposits (user_id, amount, kind) VALUES ($1, $2, 'deposit')",
                user_id,
                self.starting_cash,
            )

    @asynccontextmanager
    async def locked(self, user_id: str) -> AsyncIterator[AccountTx]:
        """The user's account, locked, in one transaction: committed when the block ends,
        rolled back if it raises."""
        async with self.pool.acquire() as conn, conn.transaction():
            await self._open(conn, user_id)
            yield AccountTx(conn, user_id, await _load(conn, user_id, lock=True))

    async def account(self, user_id: str) -> Account:
        """The user's state as of now (created on first use), without holding a lock."""
        async with self.pool.acquire() as conn, conn.transaction():
            await self._open(conn, user_id)
            return await _load(conn, user_id, lock=False)

    async def trades(self, user_id: str, *, limit: int, offset: int) -> tuple[list[TradeRow], int]:
        """A page of the user's fills, newest first, and how many there are."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id, order_id, symbol, side, quantity, price, fee, executed_at FROM trades"
                " WHERE user_id = $1 ORDER BY executed_at DESC, id DESC LIMIT $2 OFFSET $3",
                user_id,
                limit,
                offset,
            )
            total: int = await conn.fetchval(
                "SELECT count(*) FROM trades WHERE user_id = $1", user_id
            )
        return [TradeRow(**dict(r)) for r in rows], total


async def _load(conn: asyncpg.Connection, user_id: str, *, lock: bool) -> Account:
    row = await conn.fetchrow(
        "SELECT cash, reserved, realized_pnl, fees_paid, sell_fees, net_deposits FROM accounts"
        " WHERE user_id = $1" + (" FOR UPDATE" if lock else ""),
        user_id,
    )
    holdings = await conn.fetch(
        "SELECT symbol, quantity, cost FROM holdings WHERE user_id = $1 AND quantity > 0", user_id
    )
    return Account(
        cash=_plain(row["cash"]),
        reserved=_plain(row["reserved"]),
        holdings=MappingProxyType(
            {h["symbol"]: Holding(_plain(h["quantity"]), _plain(h["cost"])) for h in holdings}
        ),
        realized_pnl=_plain(row["realized_pnl"]),
        fees_paid=_plain(row["fees_paid"]),
        sell_fees=_plain(row["sell_fees"]),
        net_deposits=_plain(row["net_deposits"]),
    )


def _plain(value: Decimal) -> Decimal:
    """The same number without an exponent (asyncpg may read 10000 as ``1E+4``), so messages
    built from it read as plain digits."""
    return Decimal(format(value, "f"))
