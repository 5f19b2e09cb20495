"""The ledger store against the real PostgreSQL: lazy accounts with their opening deposit, one
locked transaction per operation, so concurrent sells never oversell, and the held state's one
statement, which writes nothing once another writer has moved the account on."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import asyncpg
import pytest
from tickwatch_common.postgres import migrate
from tickwatch_portfolio.__main__ import MIGRATIONS, SCHEMA
from tickwatch_portfolio.accounting.domain import (
    AccountingError,
    InsufficientCash,
    InsufficientQuantity,
    apply_fill,
    conservation_gap,
    withdraw,
)
from tickwatch_portfolio.ledger.store import AccountTx, LedgerStore, StaleAccount
from tickwatch_portfolio.orders.domain import OrderRequest, fill_at
from tickwatch_portfolio.problems import Answer

BUY = OrderRequest("BTC-USDT", "buy", Decimal("0.1"), "market")

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


async def _buy_tenth(tx: AccountTx) -> Answer:
    fill = fill_at("BTC-USDT", "buy", Decimal("0.1"), Decimal("20000"))
    return Answer(201, await tx.book_fill(apply_fill(tx.account, fill), BUY, fill))


async def test_the_held_state_writes_one_statement_until_another_writer_moves_it_on(
    fresh_database: str,
) -> None:
    pool, here = await _store(fresh_database)
    there = LedgerStore(pool, Decimal("10000"), "USDT")  # another process, the same ledger
    try:
        assert await here.with_held("u1", _buy_tenth) is None  # nothing held before a lock
        await _market(here, "u1", "buy", "0.1", "20000")  # locked: now held
        held = await here.with_held("u1", _buy_tenth)
        assert held is not None and held.status == 201
        assert (await here.account("u1")).cash == Decimal("5996")  # 10000 - 2 x 2002

        async with there.locked("u1") as tx:  # the other process spends nearly all of it
            await tx.book_cash(withdraw(tx.account, Decimal("5000")), "withdrawal", Decimal("5000"))
        with pytest.raises(StaleAccount):  # judged against 5996: it would have filled
            await here.with_held("u1", _buy_tenth)
        assert await pool.fetchval("SELECT count(*) FROM trades") == 2  # nothing written
        assert await here.with_held("u1", _buy_tenth) is None  # the stale state is forgotten
        with pytest.raises(InsufficientCash):  # judged again, locked: 996 < 2002
            async with here.locked("u1") as tx:
                await _buy_tenth(tx)
        account = await here.account("u1")
        assert account.cash == Decimal("996") and conservation_gap(account) == 0
    finally:
        await pool.close()


async def test_a_held_refusal_is_confirmed_and_a_reset_needs_the_lock(fresh_database: str) -> None:
    pool, here = await _store(fresh_database)
    there = LedgerStore(pool, Decimal("10000"), "USDT")
    try:
        await _market(here, "u1", "buy", "0.1", "20000")
        async with there.locked("u1") as tx:
            await tx.book_cash(withdraw(tx.account, Decimal("7000")), "withdrawal", Decimal("7000"))

        async def refuse(tx: AccountTx) -> Answer:
            await tx.confirm()
            return Answer(409, {})

        with pytest.raises(StaleAccount):
            await here.with_held("u1", refuse)
        async with here.locked("u1") as tx:
            await tx.confirm()  # free under the lock

        async def reset(tx: AccountTx) -> Answer:
            await tx.book_reset(Decimal("10000"))
            return Answer(200, {})

        with pytest.raises(RuntimeError, match="only under the lock"):
            await here.with_held("u1", reset)
        assert (await here.account("u1")).cash == Decimal("998")  # 10000 - 2002 - 7000
    finally:
        await pool.close()
