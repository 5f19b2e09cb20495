"""The ledger in PostgreSQL: load an account's state, apply the pure core, write it back.

A user's operations run one at a time, so fifty concurrent sells of one holding are judged one
after another against the quantity the previous one left, and never oversell. Two ways:

- **Locked** (:meth:`LedgerStore.locked`): one transaction that first locks the user's
  ``accounts`` row (``lock_account()``, ``FOR UPDATE``) and reads the state. Every operation
  with an Idempotency-Key, every reset, cancel and limit fill, and any account this process
  holds no state for.
- **Held** (:meth:`LedgerStore.with_held`): this process already holds the account's committed
  state (from its last operation), so it judges against that and writes in one statement,
  guarded by the account's ``version`` (bumped by every write): no transaction, one round trip.
  In process, a lock per user serialises the operations; against any other writer, the version
  does: a state that moved on writes nothing and the operation is judged again, locked.

The rules are :mod:`tickwatch_portfolio.accounting.domain`'s; this module only reads and writes.
An account is created on first use with PORTFOLIO_STARTING_CASH booked as its opening deposit.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
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
# methods extend with their ledger entry ($1 the user, $2-$13 the state, $14 the version it was
# judged against; theirs from $15): one round trip per operation instead of one per row. Every
# part writes only if ``saved`` did (``FROM saved``), so a state judged against an older version
# writes nothing and the final SELECT answers no row (:class:`StaleAccount`).
_SAVE = (
    "WITH saved AS (UPDATE accounts SET cash = $2, reserved = $3, realized_pnl = $4,"
    " fees_paid = $5, sell_fees = $6, net_deposits = $7, version = version + 1,"
    " updated_at = now() WHERE user_id = $1 AND version = $14 RETURNING version),"
    " gone AS (DELETE FROM holdings WHERE user_id = $1 AND symbol = ANY($8::text[])"
    " AND EXISTS (SELECT FROM saved)),"
    " kept AS (INSERT INTO holdings (user_id, symbol, quantity, cost, avg_buy_price, reserved)"
    " SELECT $1, h.* FROM unnest($9::text[], $10::numeric[], $11::numeric[], $12::numeric[],"
    " $13::numeric[]) AS h, saved ON CONFLICT (user_id, symbol) DO UPDATE SET"
    " quantity = EXCLUDED.quantity, cost = EXCLUDED.cost, avg_buy_price = EXCLUDED.avg_buy_price,"
    " reserved = EXCLUDED.reserved, updated_at = now())"
)

_INSERT_TRADE = (
    "INSERT INTO trades (user_id, symbol, side, quantity, price, fee, order_id)"
    " SELECT $1, $15, $16, $17, $18, $19, id FROM placed RETURNING id, executed_at"
)


def _fill_args(fill: Fill) -> tuple[Any, ...]:
    return (fill.symbol, fill.side, fill.quantity, fill.price, fill.fee)


class StaleAccount(Exception):
    """The account changed since the state an operation was judged against (another process
    wrote it): nothing was written; judge again under the lock (:meth:`LedgerStore.locked`)."""


class AccountTx:
    """One user's account for one operation: ``account`` is its state at ``version``; each
    ``book_*`` writes the new state with its ledger entry, guarded by that version.

    Either locked for the length of a transaction (:meth:`LedgerStore.locked`), or, when this
    process holds the account's committed state, no transaction at all
    (:meth:`LedgerStore.with_held`): then the operation's one ``book_*`` statement is atomic on
    its own, and a version that moved on raises :class:`StaleAccount` having written nothing.
    """

    def __init__(
        self,
        conn: asyncpg.Connection,
        user_id: str,
        account: Account,
        version: int,
        first: tuple[str, Answer] | None = None,
        *,
        one_statement: bool = False,
    ) -> None:
        self.conn = conn
        self.user_id = user_id
        self.account = account
        self.version = version
        self.one_statement = one_statement
        self.first = first
        """The answer first given under the Idempotency-Key the lock was taken with, with that
        request's fingerprint (None without a key, or on its first use)."""
        self.after_commit: list[Callable[[], None]] = []
        """Run once the transaction has committed (e.g. rest an order in the in-memory book)."""
        self.saved = False
        """Whether the account's state was written (then ``on_saved`` hears of it once committed)."""
        self._wrote = False

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

    def _writing(self) -> None:
        if self.one_statement and self._wrote:
            raise RuntimeError("an operation without a transaction writes one statement")
        self._wrote = True

    async def confirm(self) -> None:
        """Make sure ``account`` is still the committed state (for a refusal that writes
        nothing): free under the lock, one read without it."""
        if self.one_statement:
            current = await self.conn.fetchval(
                "SELECT version FROM accounts WHERE user_id = $1", self.user_id
            )
            if current != self.version:
                raise StaleAccount(self.user_id)

    async def _save(self, new: Account, then: str, *args: Any) -> asyncpg.Record:
        """Write ``new`` (only the holdings that changed) and, in the same statement, ``then``:
        more CTEs and the final SELECT, with ``args`` from $15; answers its row (and raises
        :class:`StaleAccount` when the version had moved on: then nothing was written)."""
        self._writing()
        old = self.account
        changed = [(s, h) for s, h in new.holdings.items() if old.holdings.get(s) != h]
        row: asyncpg.Record | None = await self.conn.fetchrow(
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
            self.version,
            *args,
        )
        if row is None:
            raise StaleAccount(self.user_id)
        self.account = new
        self.version += 1
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
            " SELECT $1, $15, $16, $17 FROM saved RETURNING id) SELECT id FROM entry",
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
            " status, fill_price, fee) SELECT $1, $20, $21, $22, $23, $24, 'filled', $18, $19"
            " FROM saved"
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
            " status, reserved) SELECT $1, $15, $16, 'limit', $17, $18, 'open', $19 FROM saved"
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
            ", placed AS (UPDATE orders SET status = 'filled', fill_price = $18, fee = $19,"
            f" updated_at = now() WHERE id = $20 AND EXISTS (SELECT FROM saved) RETURNING id),"
            f" traded AS ({_INSERT_TRADE}) SELECT id FROM traded",
            *_fill_args(fill),
            order_id,
        )

    async def book_cancelled(self, new: Account, order_id: int) -> asyncpg.Record:
        """Write ``new`` (the reservation released) and the order cancelled."""
        return await self._save(
            new,
            ", cancelled AS (UPDATE orders SET status = 'cancelled', updated_at = now()"
            f" WHERE id = $15 AND EXISTS (SELECT FROM saved) RETURNING {ORDER_COLUMNS})"
            " SELECT * FROM cancelled",
            order_id,
        )

    async def book_reset(self, starting_cash: Decimal) -> list[int]:
        """Start the account over: its orders, trades, holdings, cash flows and snapshots
        deleted (not archived), the open orders among them returned (to leave the LimitBook),
        the cash back to ``starting_cash`` booked as a new opening deposit, and the account's
        opening moved to now (performance starts from it). Idempotency keys are kept, so a
        retried reset replays its answer."""
        if self.one_statement:
            raise RuntimeError("a reset is several statements: only under the lock")
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
            " sell_fees = 0, net_deposits = $2, version = version + 1, created_at = now(),"
            " updated_at = now() WHERE user_id = $1",
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
        self.version += 1
        self.saved = True
        return open_ids

    async def book_rejected(self, request: OrderRequest, reason: str) -> int:
        """Record an order the ledger refused (short of cash or quantity), only if the state it
        was refused against is still the committed one."""
        self._writing()
        order_id: int | None = await self.conn.fetchval(
            "INSERT INTO orders (user_id, symbol, side, type, quantity, limit_price, status,"
            " reason) SELECT $1, $2, $3, $4, $5, $6, 'rejected', $7 FROM accounts"
            " WHERE user_id = $1 AND version = $8 RETURNING id",
            self.user_id,
            request.symbol,
            request.side,
            request.type,
            request.quantity,
            request.limit_price,
            reason,
            self.version,
        )
        if order_id is None:
            raise StaleAccount(self.user_id)
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
        self._held: dict[str, tuple[int, Account]] = {}
        """Each account's state as this process last committed or read it under the lock, with
        its version: what :meth:`with_held` judges against (the version guards every write)."""
        self._turns: dict[str, asyncio.Lock] = {}
        """One operation per account at a time in this process (a lock per user, kept: a few
        hundred bytes each), so this process's own operations never race their versions."""

    def _turn(self, user_id: str) -> asyncio.Lock:
        turn = self._turns.get(user_id)
        if turn is None:
            turn = self._turns[user_id] = asyncio.Lock()
        return turn

    def _committed(self, tx: AccountTx) -> None:
        self._held[tx.user_id] = (tx.version, tx.account)
        for then in tx.after_commit:
            then()
        if tx.saved:
            for listener in self.on_saved:
                listener(tx.user_id, tx.account)

    async def with_held(
        self, user_id: str, operation: Callable[[AccountTx], Awaitable[Answer]]
    ) -> Answer | None:
        """Run ``operation`` against the account's held state without a transaction (its one
        ``book_*`` statement guarded by the held version: one round trip instead of four); None
        when this process holds no state for the account. :class:`StaleAccount` (or any
        failure: the statement may or may not have committed) forgets the held state, so the
        caller's retry under :meth:`locked` reads it afresh."""
        async with self._turn(user_id):
            held = self._held.get(user_id)
            if held is None:
                return None
            try:
                async with self.pool.acquire() as conn:
                    tx = AccountTx(conn, user_id, held[1], held[0], one_statement=True)
                    answer = await operation(tx)
            except BaseException:
                self._held.pop(user_id, None)
                raise
            self._committed(tx)
            return answer

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
        first answer under ``key`` if any (migration 006's ``lock_account``: one round trip):
        committed when the block ends, rolled back if it raises. The committed state is held
        for :meth:`with_held`."""
        async with self._turn(user_id):
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    row = await conn.fetchrow(
                        "SELECT * FROM lock_account($1, $2, $3, $4)",
                        user_id,
                        self.quote_currency,
                        self.starting_cash,
                        key,
                    )
                    tx = AccountTx(conn, user_id, *_locked_state(row))
                    yield tx
            except BaseException:
                self._held.pop(user_id, None)
                raise
            self._committed(tx)

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


def _locked_state(row: asyncpg.Record) -> tuple[Account, int, tuple[str, Answer] | None]:
    """``lock_account``'s row: the state, its version and the key's first answer if any."""
    first = None
    if row["key_fingerprint"] is not None:
        first = (row["key_fingerprint"], Answer(row["key_status"], json.loads(row["key_body"])))
    holdings = {
        symbol: Holding(_plain(q), _plain(c), _plain(r))
        for symbol, q, c, r in zip(
            row["h_symbols"], row["h_quantities"], row["h_costs"], row["h_reserved"], strict=True
        )
    }
    return _account(row, holdings), row["version"], first


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
