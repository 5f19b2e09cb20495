"""The pure core: the alert index and the conditions. No I/O, no clocks: time is the ticks' own.

Per symbol and condition, the distinct thresholds in a :class:`~sortedcontainers.SortedList` (and
the alerts at each threshold), so a tick costs O(log n + fired) however many alerts a symbol has:

- ``above``: fires every alert with ``target <= price`` (a prefix of the list);
- ``below``: fires every alert with ``target >= price`` (a suffix);
- ``crosses_up``: ``prev < target <= price``, a range between two bisections;
- ``crosses_down``: ``price <= target < prev``, likewise;
- ``pct_change``: per window length, monotonic deques give the window's min and max in O(1)
  amortised; the move is ``max((price - min) / min, (max - price) / max) * 100`` and fires every
  alert with ``pct <= move`` (a prefix). Windows are kept at one-second resolution: the window of
  a tick at second ``s`` holds the ticks of seconds ``s - window_seconds .. s``, so each deque
  holds at most ``window_seconds + 1`` entries. :meth:`AlertIndex.window_samples` and
  :meth:`AlertIndex.restore_windows` carry a window's samples over a restart.

Frequency: a ``once`` alert is disarmed after it fires. A ``recurring`` alert leaves the index
until ``last_fired + cooldown`` (a heap per symbol puts it back); a crossing then needs a new
pair of ticks straddling the target, so it re-arms only after the price has gone back across.
``expires_at`` is another heap: at or after that time the alert leaves the index for good.
Paused alerts keep their trigger state but are not indexed.

The clock is the symbol's tick time (``ts_event``, made monotonic per symbol), which makes the
index deterministic: the same changes and ticks give the same fires, sequences included.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from sortedcontainers import SortedList
from tickwatch_common.events.alerts import Condition

_HUNDRED = Decimal(100)
_INF = Decimal("Infinity")
_NEG_INF = Decimal("-Infinity")


@dataclass(frozen=True, slots=True)
class Rule:
    """What an alert asks for. ``target`` for price conditions, ``pct`` + ``window_s`` for moves."""

    alert_id: str
    symbol: str
    condition: Condition
    target: Decimal | None = None
    pct: Decimal | None = None
    window_s: int = 0
    recurring: bool = False
    cooldown_s: int = 0
    expires_at: int | None = None
    paused: bool = False

    @property
    def threshold(self) -> Decimal:
        value = self.pct if self.condition == "pct_change" else self.target
        if value is None:
            raise ValueError(f"alert {self.alert_id}: {self.condition} needs a threshold")
        return value


@dataclass(slots=True)
class TriggerState:
    """What survives a restart: how often the alert fired, when last, and whether it may fire."""

    sequence: int = 0
    last_fired_ms: int | None = None
    armed: bool = True  # False once a ``once`` alert has fired


@dataclass(frozen=True, slots=True)
class Fire:
    alert_id: str
    symbol: str
    sequence: int
    threshold: Decimal
    price: Decimal
    ts: int


@dataclass(slots=True)
class _Entry:
    rule: Rule
    state: TriggerState
    indexed: bool = False
    gen: int = 0  # bumped on every re-placement; stale heap entries carry an older one


class _Levels:
    """Thresholds in order (each once, a SortedList of Decimals) and the alerts at each, with the
    lowest and highest at hand so a tick nowhere near any threshold is turned away by one
    comparison. Bisecting bare Decimals, not ``(threshold, alert_id)`` tuples, halves the
    comparisons, and a range that holds nothing costs one bisection."""

    __slots__ = ("hi", "ids", "keys", "lo")

    def __init__(self) -> None:
        self.keys: SortedList = SortedList()
        self.ids: dict[Decimal, dict[str, None]] = {}  # an insertion-ordered set per threshold
        self.lo = _INF
        self.hi = _NEG_INF

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, threshold: Decimal, alert_id: str) -> None:
        bucket = self.ids.get(threshold)
        if bucket is None:
            self.ids[threshold] = {alert_id: None}
            self.keys.add(threshold)
            self.lo = min(self.lo, threshold)
            self.hi = max(self.hi, threshold)
        else:
            bucket[alert_id] = None

    def remove(self, threshold: Decimal, alert_id: str) -> None:
        bucket = self.ids[threshold]
        del bucket[alert_id]
        if bucket:
            return
        del self.ids[threshold]
        keys = self.keys
        keys.remove(threshold)
        if keys:
            self.lo, self.hi = keys[0], keys[-1]
        else:
            self.lo, self.hi = _INF, _NEG_INF

    def _collect(self, start: int, end: int) -> list[str]:
        ids = self.ids
        return [a for t in self.keys.islice(start, end) for a in ids[t]]

    def up_to(self, value: Decimal) -> list[str]:
        """Alerts with ``threshold <= value``."""
        return self._collect(0, self.keys.bisect_right(value))

    def from_(self, value: Decimal) -> list[str]:
        """Alerts with ``threshold >= value``."""
        return self._collect(self.keys.bisect_left(value), len(self.keys))

    def above_to(self, low: Decimal, high: Decimal) -> list[str]:
        """Alerts with ``low < threshold <= high``."""
        keys = self.keys
        start = keys.bisect_right(low)
        if start == len(keys) or keys[start] > high:
            return []
        return self._collect(start, keys.bisect_right(high))

    def from_below(self, low: Decimal, high: Decimal) -> list[str]:
        """Alerts with ``low <= threshold < high``."""
        keys = self.keys
        end = keys.bisect_left(high)
        if end == 0 or keys[end - 1] < low:
            return []
        return self._collect(keys.bisect_left(low), end)


class _Window:
    """Min and max of a symbol's prices over the last ``seconds`` seconds, and its alerts."""

    __slots__ = ("alerts", "maxs", "mins", "seconds")

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds
        self.mins: deque[tuple[int, Decimal]] = deque()  # prices increasing
        self.maxs: deque[tuple[int, Decimal]] = deque()  # prices decreasing
        self.alerts = _Levels()  # (pct, alert_id)

    def push(self, sec: int, price: Decimal) -> None:
        mins, maxs = self.mins, self.maxs
        while mins and mins[-1][1] >= price:
            mins.pop()
        # A later price of the same second is dominated by the tail: same expiry, not smaller.
        if not mins or mins[-1][0] != sec:
            mins.append((sec, price))
        while maxs and maxs[-1][1] <= price:
            maxs.pop()
        if not maxs or maxs[-1][0] != sec:
            maxs.append((sec, price))
        oldest = sec - self.seconds
        while mins[0][0] < oldest:
            mins.popleft()
        while maxs[0][0] < oldest:
            maxs.popleft()

    def fired(self, price: Decimal) -> list[str]:
        """The alerts whose move the window now holds, smallest percentage first."""
        alerts = self.alerts
        low, high = self.mins[0][1], self.maxs[0][1]
        # Both moves are at most the window's spread relative to its low: one check turns
        # away almost every tick.
        if (high - low) * _HUNDRED < alerts.lo * low:
            return []
        hits: list[str] = []
        for pct in alerts.keys:
            if not moved(price, low, high, pct):
                break  # thresholds are in order: no later one is reached either
            hits.extend(alerts.ids[pct])
        return hits


def moved(price: Decimal, low: Decimal, high: Decimal, pct: Decimal) -> bool:
    """Whether ``price`` is at least ``pct`` percent above the window's low or below its high.

    Exact (no division): ``(price - low) / low >= pct / 100`` and its mirror, for positive prices.
    """
    return (price - low) * _HUNDRED >= pct * low or (high - price) * _HUNDRED >= pct * high


@dataclass(slots=True)
class _Book:
    """Everything one symbol needs on the tick path."""

    above: _Levels = field(default_factory=_Levels)
    below: _Levels = field(default_factory=_Levels)
    up: _Levels = field(default_factory=_Levels)
    down: _Levels = field(default_factory=_Levels)
    windows: dict[int, _Window] = field(default_factory=dict)
    rearm: list[tuple[int, int, str]] = field(default_factory=list)  # (at_ms, gen, alert_id)
    expiry: list[tuple[int, int, str]] = field(default_factory=list)
    last_price: Decimal | None = None
    clock: int = 0

    def levels(self, condition: Condition) -> _Levels:
        if condition == "above":
            return self.above
        if condition == "below":
            return self.below
        if condition == "crosses_up":
            return self.up
        return self.down


class AlertIndex:
    """The in-memory index of every alert of the symbols this process owns."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._books: dict[str, _Book] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, alert_id: object) -> bool:
        return alert_id in self._entries

    # ------------------------------------------------------------------ alerts

    def upsert(self, rule: Rule, state: TriggerState | None = None) -> None:
        """Add or replace an alert; its trigger state is kept unless ``state`` is given."""
        rule.threshold  # noqa: B018 -- validates that the condition has its threshold
        entry = self._entries.get(rule.alert_id)
        if entry is None:
            entry = _Entry(rule, state or TriggerState())
            self._entries[rule.alert_id] = entry
        else:
            self._unindex(entry)
            entry.rule = rule
            if state is not None:
                entry.state = state
        if rule.condition == "pct_change":
            # The window starts collecting when its first alert arrives, paused or not.
            book = self._book(rule.symbol)
            if rule.window_s not in book.windows:
                book.windows[rule.window_s] = _Window(rule.window_s)
        self._place(entry)

    def remove(self, alert_id: str) -> None:
        entry = self._entries.pop(alert_id, None)
        if entry is not None:
            self._unindex(entry)
            entry.gen += 1

    def rule(self, alert_id: str) -> Rule | None:
        entry = self._entries.get(alert_id)
        return entry.rule if entry else None

    def state(self, alert_id: str) -> TriggerState | None:
        entry = self._entries.get(alert_id)
        return entry.state if entry else None

    # ------------------------------------------------------------------ symbols

    def symbols(self) -> list[str]:
        return list(self._books)

    def last_price(self, symbol: str) -> tuple[Decimal, int] | None:
        book = self._books.get(symbol)
        if book is None or book.last_price is None:
            return None
        return book.last_price, book.clock

    def restore_price(self, symbol: str, price: Decimal, ts: int) -> None:
        """Set the last price and clock of a symbol (from the durable store, at start-up)."""
        book = self._book(symbol)
        book.last_price = price
        book.clock = max(book.clock, ts)

    def window_samples(self, symbol: str) -> list[tuple[int, Decimal]]:
        """The ``(second, price)`` samples the symbol's ``pct_change`` windows still hold, oldest
        first: every price that can still decide a move, which is usually far fewer than the
        ticks of a window (each deque keeps only the prices no later one has beaten).

        With :meth:`restore_windows` this carries the windows over a restart. Windows of several
        lengths share one list: each takes back the samples inside its own length, so one that
        was added after a longer one may get back prices from before it existed (still prices
        of the last ``window_seconds``), never a price that was not there.
        """
        book = self._books.get(symbol)
        if book is None or not book.windows:
            return []
        samples: set[tuple[int, Decimal]] = set()
        for window in book.windows.values():
            samples.update(window.mins)
            samples.update(window.maxs)
        return sorted(samples)

    def restore_windows(self, symbol: str, samples: list[tuple[int, Decimal]]) -> None:
        """Refill the symbol's windows (those its alerts have opened) from recorded samples,
        oldest first, before the symbol's next tick."""
        book = self._books.get(symbol)
        if book is None:
            return
        for window in book.windows.values():
            for sec, price in samples:
                window.push(sec, price)

    # ------------------------------------------------------------------ ticks

    def on_tick(self, symbol: str, price: Decimal, ts: int) -> list[Fire]:
        """Evaluate one tick; return the alerts it fires (their state is already updated)."""
        book = self._books.get(symbol)
        if book is None:
            book = self._books[symbol] = _Book()
        now = ts if ts > book.clock else book.clock
        book.clock = now
        prev = book.last_price
        book.last_price = price
        entries = self._entries
        if book.expiry and book.expiry[0][0] <= now:
            self._expire(book, now)
        if book.rearm and book.rearm[0][0] <= now:
            self._rearm(book, now)

        hits: list[str] = []
        above = book.above
        if above.lo <= price:
            hits.extend(above.up_to(price))
        below = book.below
        if below.hi >= price:
            hits.extend(below.from_(price))
        if prev is not None:
            if price > prev:
                up = book.up
                if up.lo <= price and up.hi > prev:
                    hits.extend(up.above_to(prev, price))
            elif price < prev:
                down = book.down
                if down.hi >= price and down.lo < prev:
                    hits.extend(down.from_below(price, prev))
        if book.windows:
            sec = now // 1000
            for window in book.windows.values():
                window.push(sec, price)
                if window.alerts.lo is not _INF:
                    hits.extend(window.fired(price))
        if not hits:
            return []
        return [self._fire(entries[alert_id], price, now) for alert_id in hits]

    # ------------------------------------------------------------------ internals

    def _book(self, symbol: str) -> _Book:
        book = self._books.get(symbol)
        if book is None:
            book = self._books[symbol] = _Book()
        return book

    def _fire(self, entry: _Entry, price: Decimal, now: int) -> Fire:
        rule, state = entry.rule, entry.state
        state.sequence += 1
        state.last_fired_ms = now
        self._unindex(entry)
        if rule.recurring:
            book = self._books[rule.symbol]
            heapq.heappush(book.rearm, (now + rule.cooldown_s * 1000, entry.gen, rule.alert_id))
        else:
            state.armed = False
        return Fire(rule.alert_id, rule.symbol, state.sequence, rule.threshold, price, now)

    def _place(self, entry: _Entry) -> None:
        """Index the alert, schedule it for later, or leave it out, as its rule and state say."""
        entry.gen += 1
        rule, state = entry.rule, entry.state
        if rule.paused or not state.armed:
            return
        book = self._book(rule.symbol)
        if rule.expires_at is not None:
            if rule.expires_at <= book.clock:
                return
            heapq.heappush(book.expiry, (rule.expires_at, entry.gen, rule.alert_id))
        if rule.recurring and state.last_fired_ms is not None:
            rearm_at = state.last_fired_ms + rule.cooldown_s * 1000
            if rearm_at > book.clock:
                heapq.heappush(book.rearm, (rearm_at, entry.gen, rule.alert_id))
                return
        self._index(entry)

    def _index(self, entry: _Entry) -> None:
        rule = entry.rule
        book = self._book(rule.symbol)
        if rule.condition == "pct_change":
            window = book.windows.get(rule.window_s)
            if window is None:
                window = book.windows[rule.window_s] = _Window(rule.window_s)
            window.alerts.add(rule.threshold, rule.alert_id)
        else:
            book.levels(rule.condition).add(rule.threshold, rule.alert_id)
        entry.indexed = True

    def _unindex(self, entry: _Entry) -> None:
        if not entry.indexed:
            return
        rule = entry.rule
        book = self._books[rule.symbol]
        if rule.condition == "pct_change":
            book.windows[rule.window_s].alerts.remove(rule.threshold, rule.alert_id)
        else:
            book.levels(rule.condition).remove(rule.threshold, rule.alert_id)
        entry.indexed = False

    def _expire(self, book: _Book, now: int) -> None:
        while book.expiry and book.expiry[0][0] <= now:
            _, gen, alert_id = heapq.heappop(book.expiry)
            entry = self._entries.get(alert_id)
            if entry is not None and entry.gen == gen:
                self._unindex(entry)
                entry.gen += 1  # also cancels a pending re-arm

    def _rearm(self, book: _Book, now: int) -> None:
        while book.rearm and book.rearm[0][0] <= now:
            _, gen, alert_id = heapq.heappop(book.rearm)
            entry = self._entries.get(alert_id)
            if entry is not None and entry.gen == gen and not entry.indexed:
                self._index(entry)
