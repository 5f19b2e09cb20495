"""Portfolio core in process (``make bench`` runs this; ``--quick`` for a short run). No servers.

1. Revaluation on a tick: 100,000 portfolios over 1,000 symbols (each portfolio holds 5 symbols
   at random, and symbol 0 is held by 10,000 of them, the hot symbol a tick is measured on):
   ms per tick and us per holding of ``Valuer.on_tick``, against a reference measured in the
   same run: a bare loop of the same number of Decimal multiplications (``quantity x diff``),
   the floor of any Decimal revaluation. Target (issue 11): <= 20 ms per tick, <= 2 us per holding.
2. ``LimitBook.on_tick`` with 100,000 resting orders over 1,000 symbols: us per tick when
   nothing fills, and per filled order when a tick sweeps a symbol's reachable orders, against
   a bare ``heapq.heappop`` of the same count.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import random
import time
from decimal import Decimal

from tickwatch_portfolio.orders.domain import LimitBook, RestingOrder
from tickwatch_portfolio.valuation.domain import Valuer


def bench_valuation(
    n_users: int, n_symbols: int, hot_holders: int, per_user: int, ticks: int
) -> None:
    rng = random.Random(11)
    symbols = [f"S{i:04d}-USDT" for i in range(n_symbols)]
    valuer = Valuer()
    started = time.perf_counter()
    for s in symbols:
        valuer.on_tick(s, Decimal(rng.randrange(100, 100_000)) / 100)
    hot = symbols[0]
    holdings = 0
    for u in range(n_users):
        user = f"user-{u:06d}"
        valuer.set_cash(user, Decimal("10000"))
        chosen = set(rng.sample(range(1, n_symbols), per_user - 1 if u < hot_holders else per_user))
        if u < hot_holders:
            chosen.add(0)
        for i in chosen:
            qty = Decimal(rng.randrange(1, 10**8)) / 10**8
            valuer.set_holding(user, symbols[i], qty, qty * 100)
            holdings += 1
    valuer.take_dirty()
    held = valuer.index.count(hot)
    print(
        f"valuation: {n_users:,} portfolios, {holdings:,} holdings over {n_symbols:,} symbols "
        f"built in {time.perf_counter() - started:.1f} s; {hot} held by {held:,}"
    )
    prices = [Decimal(60000) + Decimal(rng.randrange(-(10**6), 10**6)) / 100 for _ in range(256)]
    quantities = list(valuer.index.holders(hot).values())
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        for i in range(ticks):
            valuer.on_tick(hot, prices[i & 255])
        elapsed = time.perf_counter() - started
        # The reference: the same number of Decimal multiplications, nothing else.
        started = time.perf_counter()
        for i in range(ticks):
            diff = prices[i & 255] - prices[(i - 1) & 255]
            for q in quantities:
                q * diff
        reference = time.perf_counter() - started
    finally:
        gc.enable()
    per_tick = elapsed / ticks
    per_holding = per_tick / held
    ref_holding = reference / ticks / held
    print(
        f"valuation: on_tick {per_tick * 1e3:.2f} ms per tick, {per_holding * 1e6:.3f} us per "
        f"holding ({ticks} ticks on {hot}; target <= 20 ms, <= 2 us); reference (bare Decimal "
        f"multiplications) {ref_holding * 1e6:.3f} us: {per_holding / ref_holding:.1f}x"
    )
    assert all(
        valuer.total(u) == valuer.recompute(u) for u in list(valuer.index.holders(hot))[:100]
    )


def bench_limit_book(n_orders: int, n_symbols: int, ticks: int) -> None:
    rng = random.Random(13)
    symbols = [f"S{i:04d}-USDT" for i in range(n_symbols)]
    book = LimitBook()
    started = time.perf_counter()
    for i in range(n_orders):
        side = "buy" if i % 2 else "sell"
        # Buys below 100 (90..99.99), sells above (100.01..110): ticks at 100 reach none.
        cents = rng.randrange(1, 1000)
        price = Decimal(10000 - cents) / 100 if side == "buy" else Decimal(10000 + cents) / 100
        book.add(
            RestingOrder(
                f"o{i}", f"u{i % 5000}", symbols[i % n_symbols], side, Decimal("0.01"), price, i
            )
        )
    build = time.perf_counter() - started
    print(
        f"limit book: {len(book):,} resting orders over {n_symbols:,} symbols added in "
        f"{build:.2f} s ({build / n_orders * 1e6:.1f} us per add)"
    )
    gc.disable()
    try:
        started = time.perf_counter()
        for i in range(ticks):
            assert not book.on_tick(symbols[i % n_symbols], Decimal(100))
        idle = (time.perf_counter() - started) / ticks
        # Sweeps: a symbol drops to 90 and fills every buy resting on it.
        sample = symbols[:200]
        filled = 0
        started = time.perf_counter()
        for s in sample:
            filled += len(book.on_tick(s, Decimal(90)))
        sweep = time.perf_counter() - started
        # Reference: popping as many entries from heaps of the same shape.
        heaps = [[(rng.random(), j, f"o{j}") for j in range(filled // len(sample))] for _ in sample]
        for h in heaps:
            heapq.heapify(h)
        started = time.perf_counter()
        for h in heaps:
            while h:
                heapq.heappop(h)
        reference = time.perf_counter() - started
    finally:
        gc.enable()
    cancels = [f"o{i}" for i in range(0, n_orders, 7)]
    started = time.perf_counter()
    for order_id in cancels:
        book.cancel(order_id)
    cancel = (time.perf_counter() - started) / len(cancels)
    print(
        f"limit book: {idle * 1e6:.2f} us per tick that fills nothing; sweeps: {filled:,} fills in "
        f"{len(sample)} ticks, {sweep / filled * 1e6:.2f} us per fill (reference heappop "
        f"{reference / filled * 1e6:.2f} us: {sweep / reference:.1f}x); cancel {cancel * 1e6:.2f} us"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer ticks")
    args = parser.parse_args()
    bench_valuation(100_000, 1_000, 10_000, 5, 50 if args.quick else 300)
    bench_limit_book(100_000, 1_000, 20_000 if args.quick else 200_000)


if __name__ == "__main__":
    main()
