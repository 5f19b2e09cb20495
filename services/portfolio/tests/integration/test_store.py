"""The ledger store against the real PostgreSQL: lazy accounts with their opening deposit, and
one locked transaction per operation, so concurrent sells never oversell."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import asyncpg
import pytest
from tickwatch_common.postgres import migrate
from tickwatch_portfolio.__main__ import MIGRATIONS, SCHEMA
from tickwatch_portfolio.accounting.domain import (
    AccountingError,
    InsufficientQuantity,
    apply_fill,
    conservation_gap,
)
from tickwatch_portfolio.ledger.store import LedgerStore
from tickwatch_portfolio.orders.domain import OrderRequest, fill_at

pytestmark = pytest.mark.integration


async def _store(dsn: str) -> tuple[asyncpg.Pool, LedgerStore]:
    await migrate(dsn, SCHEMA, MIGRATIONS)
    pool = await asyncpg.create_pool(
        dsn, min_size=1, max_size=20, server_settings={"search_path": SCHEMA}
    )
    return pool, LedgerStore(pool, Decimal("10000"), "USDT")


async def _market(store: LedgerStore, user: str, side: str, quantity: str, price: str) -> None:
    request = OrderRequest("BTC-USDT", side, Decimal(quantity), "market")  # type: ignore[arg-type]
    async with store.locked(user) as tx:
        fill = fill_at("BTC-USDT", request.side, request.quantity, Decimal(price))
        await tx.book_fill(apply_fill(tx.account, fill), request, fill)


async def test_an_account_is_opened_once_with_its_starting_cash_as_a_deposit(
    fresh_database: str,
) -> None:
    pool, store = await _store(fresh_database)
    try:
        accounts = await asyncio.gather(*(store.account("u1") for _ in range(10)))
        assert {a.cash for a in accounts} == {Decimal("10000")}
        assert {a.net_deposits for a in accounts} == {Decimal("10000")}
        deposits = await pool.fetch("SELECT amount, kind FROM deposits WHERE user_id = 'u1'")
        assert [(d["amount"], d["kind"]) for d in deposits] == [(Decimal("10000"), "deposit")]
    finally:
        await pool.close()


async def test_fifty_concurrent_sells_through_the_store_never_oversell(
    fresh_database: str,
) -> None:
    pool, store = await _store(fresh_database)
    try:
        await _market(store, "u1", "buy", "0.5", "19000")

        async def sell() -> bool:
            try:
                await _market(store, "u1", "sell", "0.02", "21000")
            except InsufficientQuantity:
                return False
            return True

        sold = await asyncio.gather(*(sell() for _ in range(50)))
        assert sold.count(True) == 25
        account = await store.account("u1")
        assert account.holdings == {}
        assert conservation_gap(account) == 0
        holdings = await pool.fetchval("SELECT count(*) FROM holdings WHERE user_id = 'u1'")
        trades = await pool.fetchval("SELECT count(*) FROM trades WHERE user_id = 'u1'")
        assert (holdings, trades) == (0, 26)
    finally:
        await pool.close()


async def test_an_error_inside_the_transaction_writes_nothing(fresh_database: str) -> None:
    pool, store = await _store(fresh_database)
    try:
        with pytest.raises(AccountingError):
            await _market(store, "u1", "buy", "1", "20000")  # 20020 > 10000
        account = await store.account("u1")
        assert account.cash == Decimal("10000") and account.holdings == {}
        assert await pool.fetchval("SELECT count(*) FROM orders") == 0
    finally:
        await pool.close()
