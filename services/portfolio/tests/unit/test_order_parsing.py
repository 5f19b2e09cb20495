"""The internal API reads an order exactly (decimals never floats) and refuses what the contract
does not name, each refusal a 422 problem naming the field."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from tickwatch_portfolio.api.routes import Refused, parse_order
from tickwatch_portfolio.problems import dec


def refused_field(body: dict[str, Any]) -> str:
    with pytest.raises(Refused) as caught:
        parse_order(body)
    answer = caught.value.answer
    assert answer.status == 422 and answer.body["type"] == "about:blank"
    return str(answer.body["field"])


def test_a_market_order_is_read_exactly() -> None:
    order = parse_order({"symbol": "btc-usdt", "side": "buy", "quantity": "0.1"})
    assert (order.symbol, order.side, order.type, order.limit_price) == (
        "BTC-USDT",
        "buy",
        "market",
        None,
    )
    assert order.quantity == Decimal("0.1")
    # A JSON number arrives as a Decimal (json.loads(parse_float=Decimal)), never a float.
    assert parse_order({"symbol": "BTC-USDT", "side": "sell", "quantity": 2}).quantity == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"symbol": "BTC-USDT", "side": "buy", "quantity": "1", "price": "1"}, "price"),
        ({"symbol": "BTC-USDT", "side": "buy", "quantity": "1", "user_id": "x"}, "user_id"),
        ({"side": "buy", "quantity": "1"}, "symbol"),
        ({"symbol": "BTC-USDT", "side": "hold", "quantity": "1"}, "side"),
        ({"symbol": "BTC-USDT", "side": "buy", "quantity": "1", "type": "stop"}, "type"),
        ({"symbol": "BTC-USDT", "side": "buy"}, "quantity"),
        ({"symbol": "BTC-USDT", "side": "buy", "quantity": "abc"}, "quantity"),
        ({"symbol": "BTC-USDT", "side": "buy", "quantity": "NaN"}, "quantity"),
        ({"symbol": "BTC-USDT", "side": "buy", "quantity": True}, "quantity"),
        ({"symbol": "BTC-USDT", "side": "buy", "quantity": "1", "limit_price": "x"}, "limit_price"),
    ],
)
def test_refusals_name_the_field(body: dict[str, Any], field: str) -> None:
    assert refused_field(body) == field


def test_decimals_are_written_without_an_exponent() -> None:
    assert dec(Decimal("1E+4")) == "10000"
    assert dec(Decimal("0.00000001")) == "0.00000001"


def test_decimals_are_written_plain_without_trailing_zeros() -> None:
    assert dec(Decimal("137.29000000000000000000")) == "137.29"
    assert dec(Decimal("10000")) == "10000"
    assert dec(Decimal("-0.54916000000000000000")) == "-0.54916"
    assert dec(Decimal("0E-20")) == "0"
    assert dec(Decimal("-0.000")) == "0"
