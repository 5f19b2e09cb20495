"""Live revaluation: on a tick, only the holders of that symbol are revalued; plain data, no I/O.

:class:`Valuer` keeps, per user, the total value ``cash + Σ quantity x price`` *incrementally*: a
tick moving a symbol from ``old`` to ``new`` adds ``quantity x (new - old)`` to each holder's total
(one Decimal multiplication and one addition per holding), found through :class:`HolderIndex`
(symbol -> {user_id: quantity, with the user's running figures beside it so a holder costs one
lookup). A holding whose symbol has no price yet counts 0 until its first
tick. The arithmetic runs in :data:`VALUATION` (60 digits): products and sums of prices and
quantities with bounded places never round there, so the incremental total equals the full sum
(:meth:`Valuer.recompute`) exactly; the tests hold it to that.

:class:`Conflator` decides *when* a user's valuation goes out: at most once per interval per user
(default 1 s), and the value emitted is read at emission time, so the latest wins. Time is passed
in (epoch ms); nothing here reads a clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext

ZERO = Decimal(0)

VALUATION = Context(prec=60, rounding=ROUND_HALF_EVEN)
"""Valuation arithmetic: wide enough that sums of bounded-place products never round."""


class _Book:
    """One user's running figures: free plus reserved cash, the total, and cost per symbol."""

    __slots__ = ("cash", "costs", "total")

    def __init__(self) -> None:
        self.cash = ZERO
        self.total = ZERO
        self.costs: dict[str, Decimal] = {}


class HolderIndex:
    """symbol -> {user_id: (quantity, the user's running figures)}: who holds a symbol, for a
    tick to reach only them, with the figures to update at hand (no second lookup per holder)."""

    __slots__ = ("_by_symbol",)

    def __init__(self) -> None:
        self._by_symbol: dict[str, dict[str, tuple[Decimal, _Book]]] = {}

    def holders(self, symbol: str) -> dict[str, Decimal]:
        """user -> quantity of ``symbol`` (a copy, for inspection)."""
        return {user: q for user, (q, _) in self._by_symbol.get(symbol, {}).items()}

    def count(self, symbol: str) -> int:
        return len(self._by_symbol.get(symbol, ()))

    def quantity(self, symbol: str, user_id: str) -> Decimal:
        entry = self._by_symbol.get(symbol, {}).get(user_id)
        return entry[0] if entry else ZERO

    def _entries(self, symbol: str) -> dict[str, tuple[Decimal, _Book]] | None:
        return self._by_symbol.get(symbol)

    def _set(self, symbol: str, user_id: str, quantity: Decimal, book: _Book) -> Decimal:
        """Record ``user_id``'s quantity (0 removes the entry); returns the previous quantity."""
        users = self._by_symbol.get(symbol)
        entry = users.get(user_id) if users else None
        old = entry[0] if entry else ZERO
        if quantity:
            if users is None:
                users = self._by_symbol[symbol] = {}
            users[user_id] = (quantity, book)
        elif users is not None and entry is not None:
            del users[user_id]
            if not users:
                del self._by_symbol[symbol]
        return old


@dataclass(frozen=True, slots=True)
class HoldingValuation:
    """One holding marked at the latest price; ``price`` None before its symbol's first tick."""

    symbol: str
    quantity: Decimal
    price: Decimal | None
    value: Decimal
    unrealized_pnl: Decimal


@dataclass(frozen=True, slots=True)
class UserValuation:
    """What ``portfolio.valuations.v1`` carries for a user (the adapter adds ``ts``)."""

    user_id: str
    cash: Decimal
    total_value: Decimal
    holdings: tuple[HoldingValuation, ...]


class Valuer:
    """Per-user totals kept current on every tick and fill.

    ``set_cash`` and ``set_holding`` are fed from the ledger after each change (the adapter passes
    the account's free plus reserved cash, and each holding's quantity and cost basis); ``on_tick``
    revalues the symbol's holders only and marks them in :attr:`dirty`.
    """

    def __init__(self) -> None:
        self.index = HolderIndex()
        self.prices: dict[str, Decimal] = {}
        self._books: dict[str, _Book] = {}
        self.dirty: set[str] = set()

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._books

    def _book(self, user_id: str) -> _Book:
        book = self._books.get(user_id)
        if book is None:
            book = self._books[user_id] = _Book()
        return book

    def total(self, user_id: str) -> Decimal:
        book = self._books.get(user_id)
        return book.total if book else ZERO

    def set_cash(self, user_id: str, cash: Decimal) -> None:
        book = self._book(user_id)
        with localcontext(VALUATION):
            book.total += cash - book.cash
        book.cash = cash
        self.dirty.add(user_id)

    def set_holding(self, user_id: str, symbol: str, quantity: Decimal, cost: Decimal) -> None:
        """After a fill: ``user_id`` now holds ``quantity`` of ``symbol`` at ``cost`` (0 = none)."""
        book = self._book(user_id)
        old = self.index._set(symbol, user_id, quantity, book)
        price = self.prices.get(symbol)
        if price is not None:
            with localcontext(VALUATION):
                book.total += (quantity - old) * price
        if quantity:
            book.costs[symbol] = cost
        else:
            book.costs.pop(symbol, None)
        self.dirty.add(user_id)

    def remove_user(self, user_id: str) -> None:
        """Forget a user (a reset re-adds them with ``set_cash``)."""
        book = self._books.pop(user_id, None)
        if book is not None:
            for symbol in book.costs:
                self.index._set(symbol, user_id, ZERO, book)
        self.dirty.discard(user_id)

    def on_tick(self, symbol: str, price: Decimal) -> int:
        """Move ``symbol`` to ``price``: each holder's total by ``quantity x (price - old)``, and
        each holder into :attr:`dirty`. Returns how many holders were revalued (0 when the price
        did not move or nobody holds the symbol)."""
        old = self.prices.get(symbol)
        self.prices[symbol] = price
        entries = self.index._entries(symbol)
        if not entries or old == price:
            return 0
        with localcontext(VALUATION):
            diff = price if old is None else price - old
            for quantity, book in entries.values():
                book.total += quantity * diff
        self.dirty.update(entries)
        return len(entries)

    def take_dirty(self) -> set[str]:
        """The users changed since the last call (for a :class:`Conflator`), and clear them."""
        dirty, self.dirty = self.dirty, set()
        return dirty

    def recompute(self, user_id: str) -> Decimal:
        """The total from scratch (``cash + Σ quantity x price``), to check the incremental one."""
        book = self._books.get(user_id)
        if book is None:
            return ZERO
        with localcontext(VALUATION):
            total = book.cash
            for symbol in book.costs:
                price = self.prices.get(symbol)
                if price is not None:
                    total += self.index.quantity(symbol, user_id) * price
            return total

    def valuation(self, user_id: str) -> UserValuation:
        """The user's valuation now, holdings in symbol order (unrealised P&L against cost)."""
        book = self._books.get(user_id) or _Book()
        holdings = []
        with localcontext(VALUATION):
            for symbol, cost in sorted(book.costs.items()):
                quantity = self.index.quantity(symbol, user_id)
                price = self.prices.get(symbol)
                value = quantity * price if price is not None else ZERO
                pnl = value - cost if price is not None else ZERO
                holdings.append(HoldingValuation(symbol, quantity, price, value, pnl))
        return UserValuation(
            user_id=user_id, cash=book.cash, total_value=book.total, holdings=tuple(holdings)
        )


class Conflator:
    """At most one emission per user per ``interval_ms``; changes in between wait and merge.

    ``mark`` users as they change; ``due(now_ms)`` returns, in user order, those to emit now: each
    marked user not emitted within the interval. A user marked while cooling down is emitted once
    the interval since its last emission has passed (at the first ``due`` call after that). The
    caller reads each user's value when it emits, so the latest value wins. All operations are
    O(1) amortised per user: emissions are in time order, so cool-downs end in a FIFO.
    """

    def __init__(self, interval_ms: int = 1000) -> None:
        self.interval_ms = interval_ms
        self._ready: set[str] = set()  # marked, free to go
        self._waiting: set[str] = set()  # marked, cooling down
        self._cooling: set[str] = set()
        self._ends: deque[tuple[int, str]] = deque()  # (cool-down end, user), ascending
        self._now = 0

    def __len__(self) -> int:
        """Users marked and not yet emitted."""
        return len(self._ready) + len(self._waiting)

    def mark(self, users: Iterable[str]) -> None:
        marked = set(users)
        cooling = marked & self._cooling
        self._waiting |= cooling
        self._ready |= marked - cooling

    def next_due_ms(self) -> int | None:
        """When the next waiting user may go (None if none waits): for the caller's timer."""
        if self._ready:
            return 0
        for end, user in self._ends:
            if user in self._waiting:
                return end
        return None

    def due(self, now_ms: int) -> list[str]:
        """Users to emit now (and cool down); a clock going back is read as standing still."""
        now_ms = self._now = max(now_ms, self._now)
        ends = self._ends
        while ends and ends[0][0] <= now_ms:
            _, user = ends.popleft()
            self._cooling.discard(user)
            if user in self._waiting:
                self._waiting.discard(user)
                self._ready.add(user)
        if not self._ready:
            return []
        emitted = sorted(self._ready)
        self._ready = set()
        end = now_ms + self.interval_ms
        for user in emitted:
            ends.append((end, user))
        self._cooling.update(emitted)
        return emitted
