"""The expected firings, from the alert semantics as plain code (docs/DESIGN.md §4).

A recurring ``crosses_up`` alert fires on a tick when the previous tick of its symbol was below
its threshold and this one is at or above it, and its cooldown since its last firing has run
out by this tick's time. Time is the ticks' own ``ts_event``, made monotonic per symbol, as
the engine does. Fed the ticks the broker acknowledged, in order, it answers exactly the
firings the engine owes: no clocks, no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class WatchedAlert:
    alert_id: str
    symbol: str
    threshold: Decimal
    cooldown_s: int


@dataclass(frozen=True)
class Firing:
    """One firing, named by its alert and the price of the tick that fired it."""

    alert_id: str
    price: Decimal


class Oracle:
    def __init__(self, alerts: list[WatchedAlert]) -> None:
        self._alerts: dict[str, list[WatchedAlert]] = defaultdict(list)
        for alert in alerts:
            self._alerts[alert.symbol].append(alert)
        self._prev: dict[str, Decimal] = {}
        self._clock: dict[str, int] = {}
        self._last_fired: dict[str, int] = {}
        self.expected: list[Firing] = []
        self.per_alert: dict[str, int] = {a.alert_id: 0 for a in alerts}

    def on_tick(self, symbol: str, price: Decimal, ts_ms: int) -> list[Firing]:
        now = max(ts_ms, self._clock.get(symbol, ts_ms))
        self._clock[symbol] = now
        prev = self._prev.get(symbol)
        self._prev[symbol] = price
        if prev is None or price <= prev:
            return []
        fired = []
        for alert in self._alerts.get(symbol, ()):
            if not prev < alert.threshold <= price:
                continue
            last = self._last_fired.get(alert.alert_id)
            if last is not None and now < last + alert.cooldown_s * 1000:
                continue
            self._last_fired[alert.alert_id] = now
            self.per_alert[alert.alert_id] += 1
            fired.append(Firing(alert.alert_id, price))
        self.expected.extend(fired)
        return fired
