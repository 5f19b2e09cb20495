"""The price book renders each tick once, in the public API's shape."""

from __future__ import annotations

from tickwatch_common.events import Tick
from tickwatch_gateway.market.pricebook import PriceBook, price_json
from tickwatch_gateway.market.symbols import SymbolDirectory


def tick(price: str, ts: int, source: str = "replay", **extra: str) -> Tick:
    return Tick(
        symbol="SHIB-USDT",
        base="SHIB",
        quote="USDT",
        source=source,
        price=price,
        ts_event=ts,
        ts_ingest=ts,
        **extra,
    )  # type: ignore[arg-type]


def test_prices_are_plain_decimal_strings_never_exponents() -> None:
    body = price_json(tick("0.00000001", 0, volume_24h="1E+3"))
    assert (body["price"], body["volume_24h"], body["ts"]) == (
        "0.00000001",
        "1000",
        "1970-01-01T00:00:00.000Z",
    )


def test_an_older_tick_never_replaces_a_newer_one() -> None:
    book = PriceBook(SymbolDirectory())
    book.update(tick("2", 200))
    assert book.update(tick("1", 100)) is None
    assert book.latest("SHIB-USDT").tick.price == 2  # type: ignore[union-attr]
    book.update(tick("3", 150, source="binance"))
    assert book.latest("SHIB-USDT").tick.source == "replay"  # type: ignore[union-attr]
    assert book.latest("SHIB-USDT", "binance").tick.price == 3  # type: ignore[union-attr]
    assert book.symbols.resolve("shibusdt") == "SHIB-USDT"
