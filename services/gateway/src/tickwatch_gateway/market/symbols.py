"""Symbol spelling: ``BTC-USDT``, ``btc-usdt`` and ``BTCUSDT`` all name the canonical ``BTC-USDT``."""

from __future__ import annotations

from collections.abc import Iterable


class SymbolDirectory:
    """The symbols the gateway knows: configured ones plus every one seen on the tick stream."""

    def __init__(self, configured: Iterable[str] = ()) -> None:
        self._known: dict[str, str] = {}
        for symbol in configured:
            self.add(symbol)

    def add(self, symbol: str) -> None:
        self._known.setdefault(symbol.replace("-", ""), symbol)

    def resolve(self, raw: str) -> str | None:
        """The canonical symbol for ``raw``, or ``None`` when it is not known."""
        return self._known.get(raw.strip().upper().replace("-", "").replace("/", ""))

    def known(self) -> list[str]:
        return sorted(self._known.values())
