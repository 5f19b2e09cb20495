"""The latest tick per symbol and source, held in memory with its answer already rendered.

Every gateway replica sees every tick, so each holds the whole book; a GET is a dict lookup
and the body and ETag were computed once when the tick arrived.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
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


def freshest(views: Iterable[PriceView]) -> PriceView | None:
    """The view with the latest event time (``ts_event``); on a tie, the source whose name sorts
    first (``binance`` < ``coinbase`` < ``coingecko`` < ``replay``).

    The tie rule looks at the ticks alone, never at their arrival order, so every replica (and
    a replica warmed from Redis, whose hash comes back in no order) serves the same one."""
    return min(views, key=lambda v: (-v.tick.ts_event, v.tick.source), default=None)


class PriceBook:
    def __init__(self, symbols: SymbolDirectory) -> None:
        self.symbols = symbols
        self._by_symbol: dict[str, dict[str, PriceView]] = {}
        self._latest: dict[str, PriceView] = {}

    def update(self, tick: Tick) -> PriceView | None:
        """Keep ``tick`` unless a newer one of the same symbol and source is held."""
        held = self._by_symbol.setdefault(tick.symbol, {})
        kept = held.get(tick.source)
        if kept is not None and kept.tick.ts_event > tick.ts_event:
            return None
        view = held[tick.source] = PriceView.of(tick)
        self._latest[tick.symbol] = freshest(held.values()) or view
        self.symbols.add(tick.symbol)
        return view

    def latest(self, symbol: str, source: str | None = None) -> PriceView | None:
        """``source``'s latest tick of ``symbol``; without one, the :func:`freshest` source's."""
        if source is None:
            return self._latest.get(symbol)
        return self._by_symbol.get(symbol, {}).get(source)

    def all_latest(self) -> list[PriceView]:
        return [self._latest[s] for s in sorted(self._latest)]

    def by_source(self, symbol: str) -> list[PriceView]:
        """Each source's latest tick of ``symbol``, by source name."""
        held = self._by_symbol.get(symbol, {})
        return [held[source] for source in sorted(held)]

    def sources(self, symbol: str) -> list[str]:
        return sorted(self._by_symbol.get(symbol, {}))
