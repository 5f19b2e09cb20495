"""Order rules and the book of resting limit orders; plain data, no I/O.

Rules are the exchange's own (Binance ``exchangeInfo`` filters, published on
``market.instruments.v1``): ``LOT_SIZE`` (``step_size``, ``min_qty``, ``max_qty``),
``PRICE_FILTER`` (``tick_size``, ``min_price``) and ``NOTIONAL`` (``min_notional``). As on Binance,
a size or bound of 0 disables its check, and a quantity is valid when ``(quantity - min_qty)`` is a
multiple of ``step_size`` (a price likewise against ``min_price`` and ``tick_size``). Validation
returns a :class:`Rejection` naming the field (the API's 422) instead of raising, so a caller can
report every order the same way.

A market order fills at the service's latest tick, never a client's price, and only if that tick
is fresh (:func:`fresh_price`, the API's 409). A limit order rests in a :class:`LimitBook` and
fills at its limit price when a tick reaches it: a buy when ``price <= limit``, a sell when
``price >= limit``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from tickwatch_portfolio.accounting.domain import EXACT, Fill, Side

OrderType = Literal["market", "limit"]

ZERO = Decimal(0)
DEFAULT_FEE_RATE = Decimal("0.001")
"""The taker fee, 0.1 % of notional, in the quote currency."""
DEFAULT_MAX_PRICE_AGE_MS = 30_000
"""A market order needs a tick at most this old."""


@dataclass(frozen=True, slots=True)
class InstrumentRules:
    """One symbol's filters; 0 (or None for ``max_qty``) disables a check."""

    symbol: str
    step_size: Decimal
    tick_size: Decimal
    min_notional: Decimal
    min_qty: Decimal = ZERO
    max_qty: Decimal | None = None
    min_price: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What a client asks for; ``limit_price`` only (and always) on a limit order."""

    symbol: str
    side: Side
    quantity: Decimal
    type: OrderType
    limit_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an order is refused, naming the request field at fault."""

    field: str
    reason: str


def _bad_number(field: str, value: Decimal) -> Rejection | None:
    if not value.is_finite():
        return Rejection(field, f"{field} must be a finite number, got {value}")
    if value <= 0:
        return Rejection(field, f"{field} must be positive, got {value}")
    return None


def check_quantity(quantity: Decimal, rules: InstrumentRules) -> Rejection | None:
    """``LOT_SIZE``: positive, within ``[min_qty, max_qty]``, a multiple of ``step_size``."""
    if bad := _bad_number("quantity", quantity):
        return bad
    if rules.min_qty and quantity < rules.min_qty:
        return Rejection("quantity", f"quantity {quantity} is under min_qty {rules.min_qty}")
    if rules.max_qty is not None and rules.max_qty and quantity > rules.max_qty:
        return Rejection("quantity", f"quantity {quantity} is over max_qty {rules.max_qty}")
    if rules.step_size and EXACT.remainder(quantity - rules.min_qty, rules.step_size):
        return Rejection(
            "quantity", f"quantity {quantity} is not a multiple of step_size {rules.step_size}"
        )
    return None


def check_limit_price(price: Decimal, rules: InstrumentRules) -> Rejection | None:
    """``PRICE_FILTER``: positive, at least ``min_price``, a multiple of ``tick_size``."""
    if bad := _bad_number("limit_price", price):
        return bad
    if rules.min_price and price < rules.min_price:
        return Rejection("limit_price", f"limit_price {price} is under min_price {rules.min_price}")
    if rules.tick_size and EXACT.remainder(price - rules.min_price, rules.tick_size):
        return Rejection(
            "limit_price", f"limit_price {price} is not a multiple of tick_size {rules.tick_size}"
        )
    return None


def check_notional(quantity: Decimal, price: Decimal, rules: InstrumentRules) -> Rejection | None:
    """``NOTIONAL``: ``quantity x price`` at least ``min_notional`` (the price an order would
    fill at: the latest tick for a market order, the limit for a limit order)."""
    notional = EXACT.multiply(quantity, price)
    if rules.min_notional and notional < rules.min_notional:
        return Rejection(
            "quantity",
            f"notional {notional} (quantity {quantity} x price {price}) is under "
            f"min_notional {rules.min_notional}",
        )
    return None


def check_order(
    request: OrderRequest, rules: InstrumentRules, market_price: Decimal | None = None
) -> Rejection | None:
    """The first rule ``request`` breaks, or None. ``market_price`` (the fresh latest tick) is
    needed for a market order's notional; without it that check is left to the caller."""
    if request.symbol != rules.symbol:
        return Rejection("symbol", f"rules are for {rules.symbol}, not {request.symbol}")
    if request.side not in ("buy", "sell"):
        return Rejection("side", f"side must be buy or sell, got {request.side}")
    if bad := check_quantity(request.quantity, rules):
        return bad
    if request.type == "limit":
        if request.limit_price is None:
            return Rejection("limit_price", "a limit order needs limit_price")
        if bad := check_limit_price(request.limit_price, rules):
            return bad
        return check_notional(request.quantity, request.limit_price, rules)
    if request.type != "market":
        return Rejection("type", f"type must be market or limit, got {request.type}")
    if request.limit_price is not None:
        return Rejection("limit_price", "a market order takes no limit_price")
    if market_price is None:
        return None
    return check_notional(request.quantity, market_price, rules)


def taker_fee(notional: Decimal, rate: Decimal = DEFAULT_FEE_RATE) -> Decimal:
    """The fee on a fill, exact (no rounding: the ledger keeps every digit)."""
    return EXACT.multiply(notional, rate)


def fill_at(
    symbol: str, side: Side, quantity: Decimal, price: Decimal, rate: Decimal = DEFAULT_FEE_RATE
) -> Fill:
    """A fill at ``price`` with its taker fee: a market order's (latest tick) or a limit's."""
    return Fill(symbol, side, quantity, price, taker_fee(EXACT.multiply(quantity, price), rate))


def reservation(
    quantity: Decimal, limit_price: Decimal, rate: Decimal = DEFAULT_FEE_RATE
) -> Decimal:
    """Cash to reserve for a resting buy: its notional at the limit plus the fee on it, exactly
    what its fill will cost (it fills at the limit price)."""
    notional = EXACT.multiply(quantity, limit_price)
    return EXACT.add(notional, taker_fee(notional, rate))


class StalePrice(Exception):
    """No tick fresh enough for a market order; ``age_s`` is None when none was ever seen."""

    def __init__(self, symbol: str, age_s: Decimal | None, max_age_s: Decimal) -> None:
        detail = "no price yet" if age_s is None else f"latest price is {age_s} s old"
        super().__init__(f"{symbol}: {detail} (at most {max_age_s} s for a market order)")
        self.symbol = symbol
        self.age_s = age_s
        self.max_age_s = max_age_s


@dataclass(frozen=True, slots=True)
class PriceQuote:
    """The latest tick the service holds for a symbol."""

    symbol: str
    price: Decimal
    ts_ms: int


def fresh_price(
    symbol: str,
    quote: PriceQuote | None,
    now_ms: int,
    max_age_ms: int = DEFAULT_MAX_PRICE_AGE_MS,
) -> Decimal:
    """The price a market order fills at, or :class:`StalePrice` with the age in seconds. A tick
    exactly ``max_age_ms`` old is still fresh; one stamped in the future counts as age 0."""
    max_age_s = Decimal(max_age_ms) / 1000
    if quote is None:
        raise StalePrice(symbol, None, max_age_s)
    age_ms = max(0, now_ms - quote.ts_ms)
    if age_ms > max_age_ms:
        raise StalePrice(symbol, Decimal(age_ms) / 1000, max_age_s)
    return quote.price


# ---------------------------------------------------------------- resting limit orders


@dataclass(frozen=True, slots=True)
class RestingOrder:
    """A limit order waiting for a tick; ``placed_at`` (epoch ms) then ``order_id`` break ties."""

    order_id: str
    user_id: str
    symbol: str
    side: Side
    quantity: Decimal
    limit_price: Decimal
    placed_at: int


# A heap entry: (key, placed_at, order_id, seq); key is the limit for sells, -limit for buys, so
# the top of each heap is the order a falling (buys) or rising (sells) price reaches first. ``seq``
# tells a live entry from a cancelled one of an id added again.
_Entry = tuple[Decimal, int, str, int]


class _Side:
    """One symbol's orders on one side, a heap with lazy deletion: a cancel only forgets the
    order (O(1)); its entry is dropped when it surfaces, or when dead entries outnumber the live
    ones and the heap is rebuilt (O(n), so O(1) amortised per cancel)."""

    __slots__ = ("dead", "heap")

    def __init__(self) -> None:
        self.heap: list[_Entry] = []
        self.dead = 0


class LimitBook:
    """Resting limit orders indexed per symbol so a tick costs O(log n + filled).

    Per symbol, buys in a max-heap on limit and sells in a min-heap: a tick pops from the top
    while it reaches the top's limit, so the orders it does not fill cost nothing beyond one
    comparison. ``add`` is O(log n), ``cancel`` O(1) amortised. (A heap rather than the alert
    index's sorted list: a limit order fills once and leaves, so only the reachable end matters.)
    """

    def __init__(self) -> None:
        self._orders: dict[str, tuple[RestingOrder, int]] = {}
        self._sides: dict[tuple[str, Side], _Side] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._orders

    def __iter__(self) -> Iterator[RestingOrder]:
        return (order for order, _ in self._orders.values())

    def get(self, order_id: str) -> RestingOrder | None:
        found = self._orders.get(order_id)
        return found[0] if found else None

    def add(self, order: RestingOrder) -> None:
        """Rest ``order``; an id already resting is a programming error (ValueError)."""
        if order.order_id in self._orders:
            raise ValueError(f"order {order.order_id} is already resting")
        side = self._sides.get((order.symbol, order.side))
        if side is None:
            side = self._sides[(order.symbol, order.side)] = _Side()
        self._seq += 1
        key = -order.limit_price if order.side == "buy" else order.limit_price
        heapq.heappush(side.heap, (key, order.placed_at, order.order_id, self._seq))
        self._orders[order.order_id] = (order, self._seq)

    def cancel(self, order_id: str) -> RestingOrder | None:
        """Remove a resting order; None if it is not resting (filled, cancelled, unknown)."""
        found = self._orders.pop(order_id, None)
        if found is None:
            return None
        order = found[0]
        side = self._sides[(order.symbol, order.side)]
        side.dead += 1
        if side.dead > 64 and side.dead * 2 > len(side.heap):
            side.heap = [e for e in side.heap if self._live(e)]
            heapq.heapify(side.heap)
            side.dead = 0
        return order

    def _live(self, entry: _Entry) -> bool:
        found = self._orders.get(entry[2])
        return found is not None and found[1] == entry[3]

    def on_tick(self, symbol: str, price: Decimal) -> list[RestingOrder]:
        """The orders ``price`` fills, removed from the book, in time order (``placed_at``, then
        ``order_id``): buys with ``limit >= price`` and sells with ``limit <= price``. Each fills
        whole at its own limit price."""
        filled: list[RestingOrder] = []
        buys = self._sides.get((symbol, "buy"))
        if buys is not None:
            self._pop_while(buys, -price, filled)
        sells = self._sides.get((symbol, "sell"))
        if sells is not None:
            self._pop_while(sells, price, filled)
        if len(filled) > 1:  # heap order is price first; the contract is time order
            filled.sort(key=lambda o: (o.placed_at, o.order_id))
        return filled

    def _pop_while(self, side: _Side, bound: Decimal, out: list[RestingOrder]) -> None:
        heap = side.heap
        orders = self._orders
        while heap and heap[0][0] <= bound:
            entry = heapq.heappop(heap)
            found = orders.get(entry[2])
            if found is None or found[1] != entry[3]:
                side.dead -= 1
            else:
                del orders[entry[2]]
                out.append(found[0])
