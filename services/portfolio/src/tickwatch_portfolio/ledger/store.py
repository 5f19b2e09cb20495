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
from collections.abc import AsyncIterator, Callable
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


ORDER_COLUMNS = (
    "id, user_id, symbol, side, type, quantity, limit_price, status, reserved, fill_price, fee,"
    " reason, created_at, updated_at"
)


def order_body(row: asyncpg.Record) -> dict[str, Any]:
    """An order row as the API shows it."""
    return {
        "id": str(row["id"]),
        "symbol": row["symbol"],
        "side": row["side"],
        "type": row["type"],
        "quantity": dec(_plain(row["quantity"])),
        "limit_price": None if row["limit_price"] is None else dec(_plain(row["limit_price"])),
        "status": row["status"],
        "reserved": dec(_plain(row["reserved"])),
        "fill_price": None if row["fill_price"] is None else dec(_plain(row["fill_price"])),
        "fee": None if row["fee"] is None else dec(_plain(row["fee"])),
        "reason": row["reason"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
    }


@dataclass(frozen=True, slots=True)
class OpenOrder:
    """A resting limit order as stored: ``reserved`` is a buy's cash (a sell reserves its
    ``quantity`` in its holding)."""

    id: int
    user_id: str
    symbol: str
    side: Literal["buy", "sell"]
    quantity: Decimal
    limit_price: Decimal
    reserved: Decimal
    placed_at_ms: int


def _open_order(row: asyncpg.Record) -> OpenOrder:
    return OpenOrder(
        id=row["id"],
        user_id=row["user_id"],
        symbol=row["symbol"],
        side=row["side"],
        quantity=_plain(row["quantity"]),
        limit_price=_plain(row["limit_price"]),
        reserved=_plain(row["reserved"]),
        placed_at_ms=int(row["created_at"].timestamp() * 1000),
    )


# The account's state and its holdings, written in one statement whose CTEs the ``book_*``
# methods extend with their ledger entry ($1 the user, $2-$13 the state; theirs from $14): one
# round trip per operation instead of one per row.
_SAVE = (
    "WITH saved AS (UPDATE accounts SET cash = $2, reserved = $3, realized_pnl = $4,"
    " fees_paid = $5, sell_fees = $6, net_deposits = $7, updated_at = now() WHERE user_id = $1),"
    " gone AS (DELETE FROM holdings WHERE user_id = $1 AND symbol = ANY($8::text[])),"
    " kept AS (INSERT INTO holdings (user_id, symbol, quantity, cost, avg_buy_price, reserved)"
    " SELECT $1, * FROM unnest($9::text[], $10::numeric[], $11::numeric[], $12::numeric[],"
    " $13::numeric[]) ON CONFLICT (user_id, symbol) DO UPDATE SET quantity = EXCLUDED.quantity,"
    " cost = EXCLUDED.cost, avg_buy_price = EXCLUDED.avg_buy_price,"
    " reserved = EXCLUDED.reserved, updated_at = now())"
)

_INSERT_TRADE = (
    "INSERT INTO trades (user_id, symbol, side, quantity, price, fee, order_id)"
    " SELECT $1, $14, $15, $16, $17, $18, id FROM placed RETURNING id, executed_at"
)


def _fill_args(fill: Fill) -> tuple[Any, ...]:
    return (fill.symbol, fill.side, fill.quantity, fill.price, fill.fee)


class AccountTx:
    """One user's account, locked for the length of a transaction: ``account`` is its state as
    loaded; each ``book_*`` writes the new state with its ledger entry."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        user_id: str,
        account: Account,
        first: tuple[str, Answer] | None = None,
    ) -> None:
        self.conn = conn
        self.user_id = user_id
        self.account = account
        self.first = first
        """The answer first given under the Idempotency-Key the lock was taken with, with that
        request's fingerprint (None without a key, or on its first use)."""
        self.after_commit: list[Callable[[], None]] = []
        """Run once the transaction has committed (e.g. rest an order in the in-memory book)."""
        self.saved = False
        """Whether the account's state was written (then ``on_saved`` hears of it once committed)."""

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

    async def _save(self, new: Account, then: str, *args: Any) -> asyncpg.Record:
        """Write ``new`` (only the holdings that changed) and, in the same statement, ``then``:
        more CTEs and the final SELECT, with ``args`` from $14; answers its row."""
        old = self.account
        changed = [(s, h) for s, h in new.holdings.items() if old.holdings.get(s) != h]
        row: asyncpg.Record = await self.conn.fetchrow(
            _SAVE + then,
            self.user_id,
            new.cash,
            new.reserved,
            new.realized_pnl,
            new.fees_paid,
            new.sell_fees,
            new.net_deposits,
            sorted(old.holdings.keys() - new.holdings.keys()),
            [s for s, _ in changed],
            [h.quantity for _, h in changed],
            [h.cost for _, h in changed],
            [h.avg_cost for _, h in changed],
            [h.reserved for _, h in changed],
            *args,
        )
        self.account = new
        self.saved = True
        return row

    async def book_cash(
        self,
        new: Account,
        kind: CashFlowKind,
        amount: Decimal,
        value_before: Decimal | None = None,
    ) -> int:
        """Write ``new`` and its deposit or withdrawal (with the account's total value just
        before it, for the TWR); answers the entry's id."""
        row = await self._save(
            new,
            ", entry AS (INSERT INTO deposits (user_id, amount, kind, value_before)"
            " VALUES ($1, $14, $15, $16) RETURNING id) SELECT id FROM entry",
            amount,
            kind,
            value_before,
        )
        entry: int = row["id"]
        return entry

    async def book_fill(self, new: Account, request: OrderRequest, fill: Fill) -> dict[str, Any]:
        """Write ``new``, the filled order and its trade; answers the order as the API shows it."""
        row = await self._save(
            new,
            ", placed AS (INSERT INTO orders (user_id, symbol, side, type, quantity, limit_price,"
            " status, fill_price, fee) VALUES ($1, $19, $20, $21, $22, $23, 'filled', $17, $18)"
            f" RETURNING id, created_at), traded AS ({_INSERT_TRADE})"
            " SELECT placed.id, placed.created_at, traded.id AS trade_id FROM placed, traded",
            *_fill_args(fill),
            request.symbol,
            request.side,
            request.type,
            request.quantity,
            request.limit_price,
        )
        return {
            "id": str(row["id"]),
            "symbol": request.symbol,
            "side": request.side,
            "type": request.type,
            "quantity": dec(request.quantity),
            "status": "filled",
            "fill_price": dec(fill.price),
            "fee": dec(fill.fee),
            "notional": dec(fill.notional),
            "trade_id": str(row["trade_id"]),
            "created_at": _iso(row["created_at"]),
        }

    async def book_resting(
        self, new: Account, request: OrderRequest, reserved: Decimal
    ) -> tuple[OpenOrder, dict[str, Any]]:
        """Write ``new`` (its cash or quantity reserved) and the open limit order; answers it
        as stored and as the API shows it."""
        row = await self._save(
            new,
            ", placed AS (INSERT INTO orders (user_id, symbol, side, type, quantity, limit_price,"
            " status, reserved) VALUES ($1, $14, $15, 'limit', $16, $17, 'open', $18)"
            f" RETURNING {ORDER_COLUMNS}) SELECT * FROM placed",
            request.symbol,
            request.side,
            request.quantity,
            request.limit_price,
            reserved,
        )
        return _open_order(row), order_body(row)

    async def order_for_update(self, order_id: int) -> asyncpg.Record | None:
        """This user's order, its row locked (so a fill and a cancel, or two fills, of one order
        run one after the other and the second sees the first's status)."""
        row: asyncpg.Record | None = await self.conn.fetchrow(
            f"SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 AND user_id = $2 FOR UPDATE",
            order_id,
            self.user_id,
        )
        return row

    async def book_limit_fill(self, new: Account, order_id: int, fill: Fill) -> None:
        """Write ``new``, the order filled and its trade."""
        await self._save(
            new,
            ", placed AS (UPDATE orders SET status = 'filled', fill_price = $17, fee = $18,"
            f" updated_at = now() WHERE id = $19 RETURNING id), traded AS ({_INSERT_TRADE})"
            " SELECT count(*) FROM traded",
            *_fill_args(fill),
            order_id,
        )

    async def book_cancelled(self, new: Account, order_id: int) -> asyncpg.Record:
        """Write ``new`` (the reservation released) and the order cancelled."""
        return await self._save(
            new,
            ", cancelled AS (UPDATE orders SET status = 'cancelled', updated_at = now()"
            f" WHERE id = $14 RETURNING {ORDER_COLUMNS}) SELECT * FROM cancelled",
            order_id,
        )

    async def book_reset(self, starting_cash: Decimal) -> list[int]:
        """Start the account over: its orders, trades, holdings, cash flows and snapshots
        deleted (not archived), the open orders among them returned (to leave the LimitBook),
        the cash back to ``starting_cash`` booked as a new opening deposit, and the account's
        opening moved to now (performance starts from it). Idempotency keys are kept, so a
        retried reset replays its answer."""
        conn, user = self.conn, self.user_id
        open_ids = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM orders WHERE user_id = $1 AND status = 'open'", user
            )
        ]
        for table in ("trades", "orders", "holdings", "deposits", "valuation_snapshots"):
            await conn.execute(f"DELETE FROM {table} WHERE user_id = $1", user)
        await conn.execute(
            "UPDATE accounts SET cash = $2, reserved = 0, realized_pnl = 0, fees_paid = 0,"
            " sell_fees = 0, net_deposits = $2, created_at = now(), updated_at = now()"
            " WHERE user_id = $1",
            user,
            starting_cash,
        )
        if starting_cash > 0:
            await conn.execute(
                "INSERT INTO deposits (user_id, amount, kind, value_before)"
                " VALUES ($1, $2, 'deposit', 0)",
                user,
                starting_cash,
            )
        self.account = Account(cash=starting_cash, net_deposits=starting_cash)
        self.saved = True
        return open_ids

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
        self.on_saved: list[Callable[[str, Account], None]] = []
        """Told each account state committed (the live valuation)."""

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
                "INSERT INTO deposits (user_id, amount, kind, value_before)"
                " VALUES ($1, $2, 'deposit', 0)",
                user_id,
                self.starting_cash,
            )

    @asynccontextmanager
    async def locked(self, user_id: str, key: str | None = None) -> AsyncIterator[AccountTx]:
        """The user's account (created on first use), locked, in one transaction, with the
        first answer under ``key`` if any (migration 005's ``lock_account``: one round trip):
        committed when the block ends, rolled back if it raises."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT * FROM lock_account($1, $2, $3, $4)",
                user_id,
                self.quote_currency,
                self.starting_cash,
                key,
            )
            first = None
            if row["key_fingerprint"] is not None:
                first = (
                    row["key_fingerprint"],
                    Answer(row["key_status"], json.loads(row["key_body"])),
                )
            holdings = {
                symbol: Holding(_plain(q), _plain(c), _plain(r))
                for symbol, q, c, r in zip(
                    row["h_symbols"],
                    row["h_quantities"],
                    row["h_costs"],
                    row["h_reserved"],
                    strict=True,
                )
            }
            tx = AccountTx(conn, user_id, _account(row, holdings), first)
            yield tx
        for then in tx.after_commit:
            then()
        if tx.saved:
            for listener in self.on_saved:
                listener(user_id, tx.account)

    async def account(self, user_id: str) -> Account:
        """The user's state as of now (created on first use), without holding a lock."""
        async with self.pool.acquire() as conn, conn.transaction():
            await self._open(conn, user_id)
            return await _load(conn, user_id)

    async def open_orders(self) -> list[OpenOrder]:
        """Every resting limit order, oldest first (to rebuild the LimitBook at start)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {ORDER_COLUMNS} FROM orders WHERE status = 'open' ORDER BY id"
            )
        return [_open_order(r) for r in rows]

    async def orders(
        self, user_id: str, status: OrderStatus | None, *, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of the user's orders (of one status, or all), newest first, and the count."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1"
                " AND ($2::text IS NULL OR status = $2) ORDER BY id DESC LIMIT $3 OFFSET $4",
                user_id,
                status,
                limit,
                offset,
            )
            total: int = await conn.fetchval(
                "SELECT count(*) FROM orders WHERE user_id = $1"
                " AND ($2::text IS NULL OR status = $2)",
                user_id,
                status,
            )
        return [order_body(r) for r in rows], total

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

    async def accounts(self) -> list[tuple[str, Account]]:
        """Every account's state (to load the live valuation at start)."""
        async with self.pool.acquire() as conn, conn.transaction():
            users = await conn.fetch("SELECT user_id FROM accounts ORDER BY user_id")
            return [(u["user_id"], await _load(conn, u["user_id"])) for u in users]


async def load_account(conn: asyncpg.Connection, user_id: str) -> Account:
    """The user's state, unlocked, on ``conn`` (the account must exist)."""
    return await _load(conn, user_id)


async def _load(conn: asyncpg.Connection, user_id: str) -> Account:
    row = await conn.fetchrow(
        "SELECT cash, reserved, realized_pnl, fees_paid, sell_fees, net_deposits FROM accounts"
        " WHERE user_id = $1",
        user_id,
    )
    holdings = await conn.fetch(
        "SELECT symbol, quantity, cost, reserved FROM holdings WHERE user_id = $1 AND quantity > 0",
        user_id,
    )
    return _account(
        row,
        {
            h["symbol"]: Holding(_plain(h["quantity"]), _plain(h["cost"]), _plain(h["reserved"]))
            for h in holdings
        },
    )


def _account(row: asyncpg.Record, holdings: dict[str, Holding]) -> Account:
    return Account(
        cash=_plain(row["cash"]),
        reserved=_plain(row["reserved"]),
        holdings=MappingProxyType(holdings),
        realized_pnl=_plain(row["realized_pnl"]),
        fees_paid=_plain(row["fees_paid"]),
        sell_fees=_plain(row["sell_fees"]),
        net_deposits=_plain(row["net_deposits"]),
    )


def _plain(value: Decimal) -> Decimal:
    """The same number without an exponent (asyncpg may read 10000 as ``1E+4``), so messages
    built from it read as plain digits."""
    return Decimal(format(value, "f"))
