"""Live revaluation of only a symbol's holders, and the once-a-second conflation."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from tickwatch_portfolio.valuation.domain import Conflator, HoldingValuation, Valuer

D = Decimal


def valuer() -> Valuer:
    v = Valuer()
    v.set_cash("alice", D("1000"))
    v.set_cash("bob", D("500"))
    v.set_holding("alice", "BTC-USDT", D("0.1"), cost=D("6000"))
    v.set_holding("bob", "ETH-USDT", D("2"), cost=D("6000"))
    v.take_dirty()
    return v


def test_a_tick_revalues_only_the_holders_of_its_symbol() -> None:
    v = valuer()
    assert v.on_tick("BTC-USDT", D("60000")) == 1
    assert v.take_dirty() == {"alice"}
    assert v.total("alice") == D("7000")  # 1000 + 0.1 x 60000
    assert v.total("bob") == D("500")  # ETH has no price yet: counts 0
    v.on_tick("BTC-USDT", D("61000.5"))
    assert v.total("alice") == D("7100.05")  # + 0.1 x 1000.5
    assert v.on_tick("SOL-USDT", D("150")) == 0
    assert v.on_tick("BTC-USDT", D("61000.5")) == 0  # unchanged price: nobody is dirty
    assert v.take_dirty() == {"alice"}


def test_fills_and_cash_move_the_total_at_the_current_price() -> None:
    v = valuer()
    v.on_tick("ETH-USDT", D("3000"))
    v.set_cash("bob", D("200"))  # bought 0.1 ETH for 300 (fee aside)
    v.set_holding("bob", "ETH-USDT", D("2.1"), cost=D("6300"))
    assert v.total("bob") == D("6500")  # 200 + 2.1 x 3000
    assert v.index.holders("ETH-USDT") == {"bob": D("2.1")}
    v.set_holding("bob", "ETH-USDT", D("0"), cost=D("0"))
    assert v.total("bob") == D("200")
    assert "bob" not in v.index.holders("ETH-USDT")


def test_the_valuation_carries_each_holding_and_its_unrealised_pnl() -> None:
    v = valuer()
    v.on_tick("BTC-USDT", D("65000"))
    valuation = v.valuation("alice")
    assert valuation.cash == D("1000") and valuation.total_value == D("7500")
    assert valuation.holdings == (
        HoldingValuation("BTC-USDT", D("0.1"), D("65000"), D("6500.0"), D("500.0")),
    )


def test_a_removed_user_leaves_the_index() -> None:
    v = valuer()
    v.remove_user("alice")
    assert "alice" not in v and v.on_tick("BTC-USDT", D("1")) == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(
                st.just("tick"),
                st.sampled_from(["A", "B", "C"]),
                st.integers(1, 10**9).map(lambda n: D(n) / 10**4),
            ),
            st.tuples(
                st.just("hold"),
                st.sampled_from(["u1", "u2", "u3"]),
                st.sampled_from(["A", "B", "C"]),
                st.integers(0, 10**8).map(lambda n: D(n) / 10**8),
            ),
            st.tuples(
                st.just("cash"),
                st.sampled_from(["u1", "u2", "u3"]),
                st.integers(0, 10**9).map(lambda n: D(n) / 100),
            ),
        ),
        max_size=60,
    )
)
def test_incremental_totals_equal_the_full_sum_exactly(ops: list[tuple[object, ...]]) -> None:
    v = Valuer()
    for op in ops:
        match op:
            case ("tick", str(symbol), Decimal() as price):
                v.on_tick(symbol, price)
            case ("hold", str(user), str(symbol), Decimal() as quantity):
                v.set_holding(user, symbol, quantity, cost=D(1))
            case ("cash", str(user), Decimal() as cash):
                v.set_cash(user, cash)
        for user in ("u1", "u2", "u3"):
            if user in v:
                assert v.total(user) == v.recompute(user)


def test_a_user_is_emitted_at_once_then_at_most_once_a_second() -> None:
    c = Conflator(interval_ms=1000)
    c.mark(["alice"])
    assert c.due(10_000) == ["alice"]
    c.mark(["alice"])
    c.mark(["alice"])  # several changes within the second: one emission
    assert c.due(10_500) == []
    assert c.next_due_ms() == 11_000
    assert c.due(10_999) == []
    assert c.due(11_000) == ["alice"]
    assert c.due(12_500) == []  # nothing new: nothing emitted


def test_users_are_conflated_independently() -> None:
    c = Conflator()
    c.mark(["a"])
    assert c.due(0) == ["a"]
    c.mark(["a", "b"])
    assert c.due(100) == ["b"]  # a is cooling down, b is not
    assert c.due(1000) == ["a"]
    assert len(c) == 0


def test_a_clock_going_back_holds_the_cool_down() -> None:
    c = Conflator()
    c.mark(["a"])
    assert c.due(5000) == ["a"]
    c.mark(["a"])
    assert c.due(4000) == []
    assert c.due(6000) == ["a"]
