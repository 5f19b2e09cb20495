"""The account's exact state: average cost, fees, realised P&L, reservations, the identity."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tickwatch_portfolio.accounting.domain import (
    Account,
    AccountingError,
    Fill,
    InsufficientCash,
    InsufficientQuantity,
    InsufficientReserved,
    InvalidAmount,
    apply_fill,
    conservation_gap,
    deposit,
    release,
    release_quantity,
    reserve,
    reserve_quantity,
    value_account,
    withdraw,
)
from tickwatch_portfolio.orders.domain import fill_at, reservation

D = Decimal


def funded(amount: str = "20000") -> Account:
    return deposit(Account(), D(amount))


def test_a_buy_pays_notional_and_fee_but_only_the_notional_is_cost() -> None:
    account = apply_fill(funded(), fill_at("BTC-USDT", "buy", D("0.1"), D("60000")))
    # notional 0.1 x 60000 = 6000, fee 6000 x 0.001 = 6; cash 20000 - 6006
    assert account.cash == D("13994")
    assert account.holdings["BTC-USDT"].quantity == D("0.1")
    assert account.holdings["BTC-USDT"].cost == D("6000")
    assert account.fees_paid == D("6") and account.sell_fees == 0
    assert conservation_gap(account) == 0


def test_average_cost_over_two_buys_and_realised_pnl_of_a_sell_is_net_of_its_fee() -> None:
    account = apply_fill(funded(), fill_at("BTC-USDT", "buy", D("0.1"), D("60000")))
    account = apply_fill(account, fill_at("BTC-USDT", "buy", D("0.1"), D("50000")))
    # cost 6000 + 5000 = 11000 over 0.2: average 55000; fees 6 + 5; cash 20000 - 6006 - 5005
    assert account.holdings["BTC-USDT"].avg_cost == D("55000")
    assert account.cash == D("8989")
    account = apply_fill(account, fill_at("BTC-USDT", "sell", D("0.05"), D("70000")))
    # proceeds 0.05 x 70000 = 3500, fee 3.5; cost out 11000 x 0.05 / 0.2 = 2750
    # realised 3500 - 3.5 - 2750 = 746.5; cash 8989 + 3496.5
    assert account.realized_pnl == D("746.5")
    assert account.cash == D("12485.5")
    assert account.holdings["BTC-USDT"].quantity == D("0.15")
    assert account.holdings["BTC-USDT"].cost == D("8250")
    assert account.holdings["BTC-USDT"].avg_cost == D("55000")
    assert account.fees_paid == D("14.5") and account.sell_fees == D("3.5")
    # 12485.5 + 8250 + 14.5 - (746.5 + 3.5) = 20000
    assert conservation_gap(account) == 0
    assert account.cash + account.holdings_cost + account.buy_fees - account.realized_pnl == D(
        "20000"
    )


def test_the_view_at_a_price_shows_unrealised_pnl_percent_allocation_and_total() -> None:
    account = apply_fill(funded(), fill_at("BTC-USDT", "buy", D("0.1"), D("60000")))
    account = apply_fill(account, fill_at("BTC-USDT", "buy", D("0.1"), D("50000")))
    account = apply_fill(account, fill_at("BTC-USDT", "sell", D("0.05"), D("70000")))
    view = value_account(account, {"BTC-USDT": D("60000")})
    (btc,) = view.holdings
    # 0.15 x 60000 = 9000 against cost 8250: +750, 750 / 8250 = 9.0909...%
    assert btc.market_value == D("9000")
    assert btc.unrealized_pnl == D("750")
    assert btc.unrealized_pnl_pct.quantize(D("0.0001")) == D("9.0909")
    assert view.total_value == D("21485.5")  # 12485.5 cash + 9000
    assert btc.allocation_pct.quantize(D("0.0001")) == D("41.8887")  # 9000 / 21485.5
    assert view.realized_pnl == D("746.5") and view.fees_paid == D("14.5")


def test_a_holding_without_a_price_is_valued_at_cost() -> None:
    account = apply_fill(funded(), fill_at("ETH-USDT", "buy", D("2"), D("3000")))
    (eth,) = value_account(account, {}).holdings
    assert eth.price is None and eth.market_value == D("6000") and eth.unrealized_pnl == 0


def test_selling_everything_removes_the_holding_and_realises_exactly() -> None:
    # Cost 1 x 1 + 2 x 1.5 = 4 over 3: a third does not terminate.
    account = apply_fill(funded(), fill_at("X-USDT", "buy", D("1"), D("1")))
    account = apply_fill(account, fill_at("X-USDT", "buy", D("2"), D("1.5")))
    account = apply_fill(account, fill_at("X-USDT", "sell", D("1"), D("2")))
    # cost out 4/3 rounded to 1e-20 places; the rest of the cost stays with the holding
    assert account.holdings["X-USDT"].cost == D("2.66666666666666666667")
    assert conservation_gap(account) == 0
    account = apply_fill(account, fill_at("X-USDT", "sell", D("2"), D("2")))
    assert "X-USDT" not in account.holdings
    # proceeds 2 + 4, sell fees 0.002 + 0.004, cost 4: realised 6 - 0.006 - 4, to the last digit
    assert account.realized_pnl == D("1.994")
    assert conservation_gap(account) == 0


def test_withdrawing_more_than_free_cash_names_the_amounts() -> None:
    account = reserve(funded("100"), D("30"))
    with pytest.raises(InsufficientCash) as caught:
        withdraw(account, D("80"))
    assert (caught.value.required, caught.value.available) == (D("80"), D("70"))
    assert withdraw(account, D("70")).cash == 0


def test_a_buy_short_of_its_fee_is_refused_with_the_fee_included() -> None:
    account = funded("6000")
    with pytest.raises(InsufficientCash) as caught:
        apply_fill(account, fill_at("BTC-USDT", "buy", D("0.1"), D("60000")))
    assert (caught.value.required, caught.value.available) == (D("6006"), D("6000"))


def test_selling_more_than_held_is_refused_with_the_quantities() -> None:
    account = apply_fill(funded(), fill_at("BTC-USDT", "buy", D("0.1"), D("60000")))
    with pytest.raises(InsufficientQuantity) as caught:
        apply_fill(account, fill_at("BTC-USDT", "sell", D("0.2"), D("60000")))
    assert (caught.value.required, caught.value.available) == (D("0.2"), D("0.1"))
    with pytest.raises(InsufficientQuantity) as caught:
        apply_fill(account, fill_at("ETH-USDT", "sell", D("1"), D("3000")))
    assert caught.value.available == 0


def test_a_resting_buy_reserves_then_pays_from_its_reservation() -> None:
    held = reservation(D("0.1"), D("60000"))  # 6000 + 6
    account = reserve(funded("10000"), held)
    assert (account.cash, account.reserved) == (D("3994"), D("6006"))
    assert conservation_gap(account) == 0
    filled = apply_fill(account, fill_at("BTC-USDT", "buy", D("0.1"), D("60000")), reserved=held)
    assert (filled.cash, filled.reserved) == (D("3994"), D("0"))
    cancelled = release(account, held)
    assert (cancelled.cash, cancelled.reserved) == (D("10000"), D("0"))
    with pytest.raises(InsufficientReserved):
        release(account, D("6007"))
    with pytest.raises(InsufficientCash) as caught:
        reserve(account, D("4000"))
    assert caught.value.available == D("3994")


@pytest.mark.parametrize("bad", ["0", "-1", "NaN", "Infinity"])
def test_amounts_must_be_finite_and_positive(bad: str) -> None:
    with pytest.raises(InvalidAmount) as caught:
        deposit(Account(), D(bad))
    assert caught.value.field == "amount"
    with pytest.raises(InvalidAmount):
        apply_fill(funded(), Fill("BTC-USDT", "buy", D(bad), D("1"), D("0")))


def test_a_negative_fee_is_refused() -> None:
    with pytest.raises(InvalidAmount) as caught:
        apply_fill(funded(), Fill("BTC-USDT", "buy", D("1"), D("1"), D("-0.1")))
    assert caught.value.field == "fee"


# ---------------------------------------------------------------- the identity, as a property

SYMBOLS = ("BTC-USDT", "ETH-USDT")
amounts = st.integers(1, 5_000_000).map(lambda n: D(n) / 100)  # 0.01 .. 50000.00
quantities = st.integers(1, 5_000).map(lambda n: D(n) / 1000)  # step 0.001
prices = st.integers(1, 10_000_000).map(lambda n: D(n) / 100)  # tick 0.01
ops = st.one_of(
    st.tuples(st.just("deposit"), amounts),
    st.tuples(st.just("withdraw"), amounts),
    st.tuples(st.just("buy"), st.sampled_from(SYMBOLS), quantities, prices),
    st.tuples(st.just("sell"), st.sampled_from(SYMBOLS), quantities, prices),
    st.tuples(st.just("sell_part"), st.sampled_from(SYMBOLS), st.integers(1, 7), prices),
    st.tuples(st.just("rest_buy"), st.sampled_from(SYMBOLS), quantities, prices),
    st.tuples(st.just("rest_sell"), st.sampled_from(SYMBOLS), quantities, prices),
    st.tuples(st.just("cancel"), st.integers(0, 5)),
    st.tuples(st.just("fill_resting"), st.integers(0, 5)),
)
# No bare release: cash (or quantity) is only released by cancelling the order that holds it
# (releasing more than is reserved is refused, tested above), so reserved cash always equals the
# resting buys' sum and each holding's reserved quantity the resting sells' sum.


@settings(max_examples=300, deadline=None)
@given(st.lists(ops, max_size=40))
def test_conservation_holds_exactly_after_any_sequence(sequence: list[tuple[object, ...]]) -> None:
    account = Account()
    # side, symbol, qty, limit, reserved cash (a buy's; 0 for a sell, which reserves its qty)
    resting: list[tuple[str, str, Decimal, Decimal, Decimal]] = []
    for op in sequence:
        before = account
        try:
            match op:
                case ("deposit", Decimal() as amount):
                    account = deposit(account, amount)
                case ("withdraw", Decimal() as amount):
                    account = withdraw(account, amount)
                case ("buy" | "sell" as side, str(symbol), Decimal() as q, Decimal() as p):
                    account = apply_fill(account, fill_at(symbol, side, q, p))
                case ("sell_part", str(symbol), int(parts), Decimal() as p):
                    held = account.free_quantity(symbol)
                    q = (held / parts).quantize(D("0.001")) if held else D("0.001")
                    account = apply_fill(account, fill_at(symbol, "sell", max(q, D("0.001")), p))
                case ("rest_buy", str(symbol), Decimal() as q, Decimal() as p):
                    held_cash = reservation(q, p)
                    account = reserve(account, held_cash)
                    resting.append(("buy", symbol, q, p, held_cash))
                case ("rest_sell", str(symbol), Decimal() as q, Decimal() as p):
                    account = reserve_quantity(account, symbol, q)
                    resting.append(("sell", symbol, q, p, D(0)))
                case ("cancel", int(i)) if i < len(resting):
                    side, symbol, q, _, held_cash = resting[i]
                    if side == "buy":
                        account = release(account, held_cash)
                    else:
                        account = release_quantity(account, symbol, q)
                    resting.pop(i)
                case ("fill_resting", int(i)) if i < len(resting):
                    side, symbol, q, p, held_cash = resting[i]
                    if side == "buy":
                        fill = fill_at(symbol, "buy", q, p)
                        account = apply_fill(account, fill, reserved=held_cash)
                    else:
                        fill = fill_at(symbol, "sell", q, p)
                        account = apply_fill(account, fill, reserved_quantity=q)
                    resting.pop(i)
        except AccountingError as error:
            assert account is before  # an error leaves the state as it was
            if isinstance(error, InsufficientCash):
                assert error.required > error.available == account.cash
            if isinstance(error, InsufficientQuantity):
                assert error.required > error.available == account.free_quantity(error.symbol)
        assert conservation_gap(account) == 0
        assert account.cash >= 0 and account.reserved >= 0
        assert account.reserved == sum((r[4] for r in resting if r[0] == "buy"), D(0))
        for symbol in SYMBOLS:
            held = sum((r[2] for r in resting if r[0] == "sell" and r[1] == symbol), D(0))
            assert account.reserved_quantity(symbol) == held  # a resting sell's quantity stays
        for holding in account.holdings.values():
            assert holding.quantity > 0 and holding.cost > 0
            assert 0 <= holding.reserved <= holding.quantity


def test_a_resting_sell_reserves_its_quantity_so_nothing_can_oversell() -> None:
    account = apply_fill(funded("10000"), fill_at("BTC-USDT", "buy", D("1"), D("100")))
    account = reserve_quantity(account, "BTC-USDT", D("0.6"))
    assert account.free_quantity("BTC-USDT") == D("0.4")
    with pytest.raises(InsufficientQuantity) as caught:
        apply_fill(account, fill_at("BTC-USDT", "sell", D("0.5"), D("100")))
    assert (caught.value.required, caught.value.available) == (D("0.5"), D("0.4"))
    with pytest.raises(InsufficientQuantity):
        reserve_quantity(account, "BTC-USDT", D("0.5"))
    filled = apply_fill(
        account, fill_at("BTC-USDT", "sell", D("0.6"), D("110")), reserved_quantity=D("0.6")
    )
    assert (filled.quantity("BTC-USDT"), filled.reserved_quantity("BTC-USDT")) == (D("0.4"), 0)
    cancelled = release_quantity(account, "BTC-USDT", D("0.6"))
    assert cancelled.free_quantity("BTC-USDT") == D("1")
    assert conservation_gap(filled) == conservation_gap(cancelled) == 0
