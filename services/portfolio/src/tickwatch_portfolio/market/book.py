"""The in-process price book and rule book, fed from ``market.ticks.v1`` and
``market.instruments.v1``; plain data, the consumer hands records in."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from tickwatch_common.events import Instrument, Tick

from tickwatch_portfolio.orders.domain import InstrumentRules, PriceQuote


class PriceBook:
    """The latest price per symbol (latest by ``ts_event``: a late tick from a slower source
    does not move it back) and the rules of every instrument the topic published."""

    def __init__(self) -> None:
        self.quotes: dict[str, PriceQuote] = {}
        self.rules: dict[str, InstrumentRules] = {}
        self.trading: dict[str, bool] = {}

    def on_tick(self, tick: Tick) -> None:
        held = self.quotes.get(tick.symbol)
        if held is None or tick.ts_event >= held.ts_ms:
            self.quotes[tick.symbol] = PriceQuote(tick.symbol, Decimal(tick.price), tick.ts_event)

    def on_instrument(self, instrument: Instrument) -> None:
        self.rules[instrument.symbol] = InstrumentRules(
            symbol=instrument.symbol,
            step_size=Decimal(instrument.step_size),
            tick_size=Decimal(instrument.tick_size),
            min_notional=Decimal(instrument.min_notional),
        )
        self.trading[instrument.symbol] = instrument.status == "TRADING"

    def on_events(self, events: Iterable[object]) -> None:
        for event in events:
            if isinstance(event, Tick):
                self.on_tick(event)
            elif isinstance(event, Instrument):
                self.on_instrument(event)

    def prices(self) -> dict[str, Decimal]:
        return {symbol: quote.price for symbol, quote in self.quotes.items()}
