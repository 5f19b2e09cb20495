"""The price book renders each tick once, in the public API's shape."""

from __future__ import annotations

from tickwatch_common.events import Tick
from tickwatch_gateway.market.pricebook import PriceBook, freshest, price_json
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


def test_without_a_source_the_latest_event_time_wins_whatever_the_arrival_order() -> None:
    ticks = [tick("10", 300, "coingecko"), tick("11", 200, "binance"), tick("12", 300, "replay")]
    for order in (ticks, ticks[::-1], [ticks[1], ticks[0], ticks[2]]):
        book = PriceBook(SymbolDirectory())
        for t in order:
            book.update(t)
        # 300 ms is the latest; coingecko and replay tie there, and "coingecko" sorts first.
        assert book.latest("SHIB-USDT").tick.source == "coingecko"  # type: ignore[union-attr]
        assert [v.tick.source for v in book.by_source("SHIB-USDT")] == [
            "binance",
            "coingecko",
            "replay",
        ]
    book.update(tick("13", 301, "binance"))
    assert book.latest("SHIB-USDT").tick.price == 13  # type: ignore[union-attr]


def test_freshest_of_nothing_is_none() -> None:
    assert freshest([]) is None
    assert PriceBook(SymbolDirectory()).latest("SHIB-USDT", "coinbase") is None
