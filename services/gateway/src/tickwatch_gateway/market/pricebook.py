"""The latest tick per symbol and source, held in memory with its answer already rendered.

Every gateway replica sees every tick, so each holds the whole book; a GET is a dict lookup
and the body and ETag were computed once when the tick arrived.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from tickwatch_common.events import Tick

from tickwatch_gateway.http.api_types import decimal_str, optional_decimal_str
from tickwatch_gateway.market.symbols import SymbolDirectory
from tickwatch_gateway.runtime.clock import iso_from_ms


def price_json(tick: Tick) -> dict[str, str | None]:
    return {
        "symbol": tick.symbol,
        "price": decimal_str(tick.price),
        "source": tick.source,
        "ts": iso_from_ms(tick.ts_event),
        "change_24h_pct": optional_decimal_str(tick.change_24h_pct),
        "volume_24h": optional_decimal_str(tick.volume_24h),
    }


@dataclass(frozen=True)
class PriceView:
    tick: Tick
    body: bytes
    etag: str

    @classmethod
    def of(cls, tick: Tick) -> PriceView:
        body = json.dumps(price_json(tick), separators=(",", ":")).encode()
        return cls(tick, body, '"' + hashlib.blake2b(body, digest_size=8).hexdigest() + '"')


class PriceBook:
    def __init__(self, symbols: SymbolDirectory) -> None:
        self.symbols = symbols
        self._by_source: dict[tuple[str, str], PriceView] = {}
        self._latest: dict[str, PriceView] = {}

    def update(self, tick: Tick) -> PriceView | None:
        """Keep ``tick`` unless a newer one of the same symbol and source is held."""
        key = (tick.symbol, tick.source)
        held = self._by_source.get(key)
        if held is not None and held.tick.ts_event > tick.ts_event:
            return None
        view = PriceView.of(tick)
        self._by_source[key] = view
        latest = self._latest.get(tick.symbol)
        if (
            latest is None
            or latest.tick.source == tick.source
            or (latest.tick.ts_event <= tick.ts_event)
        ):
            self._latest[tick.symbol] = view
        self.symbols.add(tick.symbol)
        return view

    def latest(self, symbol: str, source: str | None = None) -> PriceView | None:
        if source is None:
            return self._latest.get(symbol)
        return self._by_source.get((symbol, source))

    def all_latest(self) -> list[PriceView]:
        return [self._latest[s] for s in sorted(self._latest)]

    def sources(self, symbol: str) -> list[str]:
        return sorted(src for sym, src in self._by_source if sym == symbol)
