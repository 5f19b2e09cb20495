"""Order rules (filters, fee, freshness) and the resting limit order book."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tickwatch_portfolio.orders.domain import (
    InstrumentRules,
    LimitBook,
    OrderRequest,
    PriceQuote,
    RestingOrder,
    StalePrice,
    check_order,
    fill_at,
    fresh_price,
    reservation,
    taker_fee,
)

D = Decimal
BTC = InstrumentRules("BTC-USDT", step_size=D("0.00001"), tick_size=D("0.01"), min_notional=D("5"))


def market(quantity: str, side: str = "buy") -> OrderRequest:
    return OrderRequest("BTC-USDT", side, D(quantity), "market")  # type: ignore[arg-type]


def limit(quantity: str, price: str) -> OrderRequest:
    return OrderRequest("BTC-USDT", "buy", D(quantity), "limit", D(price))


def test_a_valid_market_and_limit_order_pass() -> None:
    assert check_order(market("0.001"), BTC, D("60000")) is None
    assert check_order(limit("0.001", "59999.99"), BTC) is None


def test_a_quantity_off_the_step_size_is_refused_naming_quantity() -> None:
    rejection = check_order(market("0.000015"), BTC, D("60000"))
    assert rejection is not None and rejection.field == "quantity"
    assert "step_size 0.00001" in rejection.reason


def test_the_step_counts_from_min_qty_as_on_binance() -> None:
    rules = InstrumentRules("X", D("0.1"), D("0"), D("0"), min_qty=D("0.05"))
    assert check_order(OrderRequest("X", "buy", D("0.15"), "market"), rules) is None
    rejection = check_order(OrderRequest("X", "buy", D("0.1"), "market"), rules)
    assert rejection is not None and "step_size" in rejection.reason
    rejection = check_order(OrderRequest("X", "buy", D("0.01"), "market"), rules)
    assert rejection is not None and "min_qty" in rejection.reason


def test_a_notional_under_the_minimum_is_refused_with_the_amounts() -> None:
    rejection = check_order(market("0.00008"), BTC, D("60000"))  # 4.8 < 5
    assert rejection is not None and rejection.field == "quantity"
    assert "notional 4.8" in rejection.reason and "min_notional 5" in rejection.reason
    rejection = check_order(limit("0.0001", "40000"), BTC)  # 4 < 5 at the limit price
    assert rejection is not None and "notional 4" in rejection.reason


def test_a_limit_price_off_the_tick_size_is_refused_naming_limit_price() -> None:
    rejection = check_order(limit("0.001", "60000.005"), BTC)
    assert rejection is not None and rejection.field == "limit_price"
    assert "tick_size 0.01" in rejection.reason


@pytest.mark.parametrize("bad", ["0", "-0.001", "NaN", "Infinity"])
def test_non_positive_or_non_finite_values_are_refused(bad: str) -> None:
    rejection = check_order(market(bad), BTC, D("60000"))
    assert rejection is not None and rejection.field == "quantity"
    rejection = check_order(limit("0.001", bad), BTC)
    assert rejection is not None and rejection.field == "limit_price"


def test_a_limit_needs_its_price_and_a_market_order_takes_none() -> None:
    no_price = OrderRequest("BTC-USDT", "buy", D("0.001"), "limit")
    rejection = check_order(no_price, BTC)
    assert rejection is not None and rejection.field == "limit_price"
    with_price = OrderRequest("BTC-USDT", "buy", D("0.001"), "market", D("1"))
    rejection = check_order(with_price, BTC, D("60000"))
    assert rejection is not None and rejection.field == "limit_price"


def test_a_zero_size_disables_its_check() -> None:
    rules = InstrumentRules("X", D("0"), D("0"), D("0"))
    assert (
        check_order(OrderRequest("X", "buy", D("0.123456789"), "limit", D("1.23456")), rules)
        is None
    )


def test_the_taker_fee_is_the_notional_times_the_rate_exactly() -> None:
    assert taker_fee(D("6000")) == D("6")
    assert taker_fee(D("1234.5678"), D("0.00075")) == D("0.925925850")
    fill = fill_at("BTC-USDT", "sell", D("0.00123"), D("67123.45"))
    assert fill.fee == D("0.08256184350")  # 0.00123 x 67123.45 = 82.5618435; x 0.001
    assert reservation(D("0.1"), D("60000")) == D("6006")


def test_a_market_order_needs_a_tick_no_older_than_the_bound() -> None:
    quote = PriceQuote("BTC-USDT", D("60000"), ts_ms=1_000_000)
    assert fresh_price("BTC-USDT", quote, now_ms=1_030_000) == D("60000")  # exactly 30 s
    with pytest.raises(StalePrice) as caught:
        fresh_price("BTC-USDT", quote, now_ms=1_030_001)
    assert caught.value.age_s == D("30.001") and "30.001 s old" in str(caught.value)
    with pytest.raises(StalePrice) as caught:
        fresh_price("BTC-USDT", None, now_ms=1_030_001)
    assert caught.value.age_s is None
    assert fresh_price("BTC-USDT", quote, now_ms=999_000) == D("60000")  # future stamp: age 0


# ---------------------------------------------------------------- the book


def order(
    order_id: str, side: str, price: str, placed_at: int = 0, symbol: str = "BTC-USDT"
) -> RestingOrder:
    return RestingOrder(order_id, "u1", symbol, side, D("0.01"), D(price), placed_at)  # type: ignore[arg-type]


def ids(orders: list[RestingOrder]) -> list[str]:
    return [o.order_id for o in orders]


def test_a_buy_fills_when_the_price_falls_to_its_limit_and_a_sell_when_it_rises() -> None:
    book = LimitBook()
    book.add(order("b", "buy", "100"))
    book.add(order("s", "sell", "110"))
    assert book.on_tick("BTC-USDT", D("100.01")) == []
    assert ids(book.on_tick("BTC-USDT", D("100"))) == ["b"]
    assert book.on_tick("BTC-USDT", D("109.99")) == []
    assert ids(book.on_tick("BTC-USDT", D("111"))) == ["s"]
    assert len(book) == 0


def test_a_tick_fills_only_the_orders_it_reaches_and_leaves_the_rest() -> None:
    book = LimitBook()
    for i, price in enumerate(["90", "95", "100", "105"]):
        book.add(order(f"b{price}", "buy", price, placed_at=i))
    assert ids(book.on_tick("BTC-USDT", D("97"))) == ["b100", "b105"]
    assert sorted(o.order_id for o in book) == ["b90", "b95"]
    assert ids(book.on_tick("BTC-USDT", D("97"))) == []
    assert ids(book.on_tick("BTC-USDT", D("50"))) == ["b90", "b95"]


def test_fills_come_in_time_order_then_id_whatever_their_prices() -> None:
    book = LimitBook()
    book.add(order("late-best", "buy", "110", placed_at=3))
    book.add(order("z", "buy", "100", placed_at=1))
    book.add(order("a", "buy", "100", placed_at=1))
    book.add(order("early", "buy", "101", placed_at=0))
    book.add(order("sell", "sell", "90", placed_at=2))
    assert ids(book.on_tick("BTC-USDT", D("100"))) == ["early", "a", "z", "sell", "late-best"]


def test_cancel_removes_an_order_and_answers_none_for_one_not_resting() -> None:
    book = LimitBook()
    book.add(order("b", "buy", "100"))
    cancelled = book.cancel("b")
    assert cancelled is not None and cancelled.order_id == "b"
    assert book.cancel("b") is None and book.cancel("nope") is None
    assert book.on_tick("BTC-USDT", D("1")) == []
    assert "b" not in book


def test_an_id_added_again_after_cancel_fills_at_its_new_limit_only() -> None:
    book = LimitBook()
    book.add(order("b", "buy", "100"))
    book.cancel("b")
    book.add(order("b", "buy", "90"))
    with pytest.raises(ValueError, match="already resting"):
        book.add(order("b", "buy", "80"))
    assert book.on_tick("BTC-USDT", D("95")) == []
    assert ids(book.on_tick("BTC-USDT", D("90"))) == ["b"]


def test_symbols_are_independent() -> None:
    book = LimitBook()
    for i in range(50):
        book.add(order(f"{i}", "sell", "100", symbol=f"S{i}-USDT"))
    assert ids(book.on_tick("S7-USDT", D("100"))) == ["7"]
    assert book.on_tick("S8-USDT", D("99")) == []
    assert len(book) == 49


def test_many_cancels_compact_the_heap_and_keep_the_rest_correct() -> None:
    book = LimitBook()
    for i in range(1000):
        book.add(order(f"o{i}", "buy", str(1000 + i), placed_at=i))
    for i in range(1000):
        if i % 5:  # 800 cancels: the heap is rebuilt once dead entries outnumber live ones
            book.cancel(f"o{i}")
    remaining = {o.order_id for o in book}
    assert len(remaining) == 200
    filled = book.on_tick("BTC-USDT", D("1500"))
    assert {o.order_id for o in filled} == {o for o in remaining if int(o[1:]) >= 500}
    assert [o.placed_at for o in filled] == sorted(o.placed_at for o in filled)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.sampled_from(["buy", "sell"]), st.integers(90, 110)),
            st.tuples(st.just("cancel"), st.integers(0, 60)),
            st.tuples(st.just("tick"), st.integers(85, 115)),
        ),
        max_size=80,
    )
)
def test_the_book_agrees_with_a_brute_force_list(ops: list[tuple[object, ...]]) -> None:
    book = LimitBook()
    oracle: dict[str, RestingOrder] = {}
    for n, op in enumerate(ops):
        match op:
            case ("add", str(side), int(price)):
                o = order(f"o{n}", side, str(price), placed_at=n // 3)
                book.add(o)
                oracle[o.order_id] = o
            case ("cancel", int(k)):
                assert book.cancel(f"o{k}") == oracle.pop(f"o{k}", None)
            case ("tick", int(price)):
                p = D(price)
                expected = sorted(
                    (
                        o
                        for o in oracle.values()
                        if (o.side == "buy" and p <= o.limit_price)
                        or (o.side == "sell" and p >= o.limit_price)
                    ),
                    key=lambda o: (o.placed_at, o.order_id),
                )
                assert book.on_tick("BTC-USDT", p) == expected
                for o in expected:
                    del oracle[o.order_id]
        assert len(book) == len(oracle)
