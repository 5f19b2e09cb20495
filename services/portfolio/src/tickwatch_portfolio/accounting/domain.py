"""An account's exact state as immutable values, and the pure functions that move it.

State (:class:`Account`): free ``cash``, ``reserved`` cash (held for resting buys), ``holdings``
(symbol -> quantity, total cost basis and the part of the quantity ``reserved`` for resting
sells), ``realized_pnl`` (net of each sell's fee),
``fees_paid`` (every fee, buys and sells), ``sell_fees`` (the part of ``fees_paid`` charged on
sells) and ``net_deposits`` (deposits minus withdrawals; a new account's paper cash is a deposit).

Average-cost basis, as Binance and Ghostfolio report it:

- a buy of ``q`` at ``p`` with fee ``f`` pays ``q*p + f`` from cash; the holding's cost grows by
  ``q*p`` only (the fee is *not* in the cost basis, it is recorded in ``fees_paid``);
- a sell of ``q`` out of ``Q`` held takes ``c = cost * q / Q`` off the holding's cost (all of it
  when ``q == Q``), credits ``q*p - f`` to cash, and realises ``q*p - f - c``.

The conservation identity, exact at every step (:func:`conservation_gap` is 0)::

    cash + reserved + Σ holding.cost + fees_paid - (realized_pnl + sell_fees) == net_deposits

Why ``realized_pnl + sell_fees``: a buy moves ``q*p + f`` out of cash into cost (``q*p``) and
fees (``f``), so the left side does not move. A sell moves cash by ``q*p - f``, cost by ``-c`` and
fees by ``+f``: the first three terms move by ``q*p - c``, which is the sell's *gross* realised
P&L (before its fee). The issue's "cash + holdings at cost + fees paid - realised P&L" is this
identity with realised P&L read gross of sell fees; with the realised P&L we report (net of the
sell's fee) the sell fees must be added back, or equivalently only buy fees counted::

    cash + reserved + Σ holding.cost + buy_fees - realized_pnl == net_deposits

Exactness: every amount is a finite :class:`~decimal.Decimal`, and every ledger operation runs in
:data:`EXACT`, a context that traps ``Inexact``: an operation that could only be done by
rounding raises :class:`decimal.Inexact` instead of silently losing money (inputs are bounded by
the instruments' step and tick sizes, so this takes amounts far beyond any real balance). The one
division in the ledger, the cost ``c`` taken off a holding on a partial sell, is rounded
half-even to :data:`COST_QUANTUM` (1e-20, finer than any step size x tick size x fee rate, so
ledger amounts keep a bounded number of places): whatever it rounds moves between the realised
P&L and the remaining cost basis of the *same* holding, never into or out of cash, and
the identity stays exact because both sides use the same ``c``; selling the rest of the holding
takes exactly the cost left. Views (:func:`value_account`) divide for averages and percentages;
they are reports, not ledger state, and round in the ambient context.

Reserved quantity: a resting sell sets its quantity aside in its holding (``reserve_quantity``),
so a market sell, or another resting sell, can only take the *free* quantity (``quantity -
reserved``): resting sells plus market sells can never oversell. The reserved quantity stays
in the holding (still owned, still at cost), so reserving moves no money and the identity is
untouched; the resting sell's fill releases it first (``apply_fill(..., reserved_quantity=q)``).

Every function returns a new :class:`Account`; an error leaves the caller's value as it was
(nothing is mutated), so "an error changes nothing" holds by construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from types import MappingProxyType
from typing import Literal

Side = Literal["buy", "sell"]

ZERO = Decimal(0)
HUNDRED = Decimal(100)

EXACT = Context(
    prec=60,
    rounding=ROUND_HALF_EVEN,
    traps=[InvalidOperation, DivisionByZero, Overflow, Inexact],
)
"""Ledger arithmetic: 60 digits, and any rounding raises :class:`decimal.Inexact`."""

COST_SHARE = Context(prec=40, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero])
"""The cost share of a partial sell, the one ledger division (rounds; see the module docstring)."""

COST_QUANTUM = Decimal("1e-20")
"""The places the cost share of a partial sell is rounded to."""


class AccountingError(Exception):
    """A rule refused an operation; the account is unchanged."""


class InvalidAmount(AccountingError):
    """An amount that is not a finite positive Decimal (or a negative fee)."""

    def __init__(self, field: str, value: Decimal) -> None:
        super().__init__(f"{field} must be a finite positive amount, got {value}")
        self.field = field
        self.value = value


class InsufficientCash(AccountingError):
    """Free cash is short: ``required`` (for a withdrawal, the amount requested) > ``available``."""

    def __init__(self, required: Decimal, available: Decimal) -> None:
        super().__init__(f"insufficient cash: required {required}, available {available}")
        self.required = required
        self.available = available


class InsufficientReserved(AccountingError):
    """A release or reserved fill asks for more than is reserved."""

    def __init__(self, required: Decimal, available: Decimal) -> None:
        super().__init__(f"insufficient reserved cash: required {required}, available {available}")
        self.required = required
        self.available = available


class InsufficientQuantity(AccountingError):
    """A sell (or a resting sell's reservation) of more than the free quantity held."""

    def __init__(self, symbol: str, required: Decimal, available: Decimal) -> None:
        super().__init__(
            f"insufficient {symbol} quantity: required {required}, available {available}"
        )
        self.symbol = symbol
        self.required = required
        self.available = available


class InsufficientReservedQuantity(AccountingError):
    """A release of more quantity than resting sells reserved."""

    def __init__(self, symbol: str, required: Decimal, available: Decimal) -> None:
        super().__init__(
            f"insufficient reserved {symbol} quantity: required {required}, available {available}"
        )
        self.symbol = symbol
        self.required = required
        self.available = available


@dataclass(frozen=True, slots=True)
class Holding:
    """A position at average cost: ``cost`` is the total basis, fees excluded; ``reserved`` is
    the part of ``quantity`` resting sells hold (``0 <= reserved <= quantity``)."""

    quantity: Decimal
    cost: Decimal
    reserved: Decimal = ZERO

    @property
    def free(self) -> Decimal:
        """The quantity a sell may take or a resting sell reserve."""
        return EXACT.subtract(self.quantity, self.reserved)

    @property
    def avg_cost(self) -> Decimal:
        """The average buy price (a view: divides, rounds in the ambient context)."""
        return self.cost / self.quantity


def _frozen(holdings: Mapping[str, Holding]) -> Mapping[str, Holding]:
    return MappingProxyType(dict(holdings))


@dataclass(frozen=True, slots=True)
class Account:
    """One user's exact state in one quote currency; see the module docstring for the identity."""

    cash: Decimal = ZERO
    reserved: Decimal = ZERO
    holdings: Mapping[str, Holding] = field(default_factory=lambda: _frozen({}))
    realized_pnl: Decimal = ZERO
    fees_paid: Decimal = ZERO
    sell_fees: Decimal = ZERO
    net_deposits: Decimal = ZERO

    @property
    def buy_fees(self) -> Decimal:
        return self.fees_paid - self.sell_fees

    @property
    def holdings_cost(self) -> Decimal:
        """Σ cost basis of the holdings (exact: a sum)."""
        with localcontext(EXACT):
            return sum((h.cost for h in self.holdings.values()), ZERO)

    def quantity(self, symbol: str) -> Decimal:
        holding = self.holdings.get(symbol)
        return holding.quantity if holding else ZERO

    def free_quantity(self, symbol: str) -> Decimal:
        holding = self.holdings.get(symbol)
        return holding.free if holding else ZERO

    def reserved_quantity(self, symbol: str) -> Decimal:
        holding = self.holdings.get(symbol)
        return holding.reserved if holding else ZERO


@dataclass(frozen=True, slots=True)
class Fill:
    """An executed trade as the ledger books it: ``fee`` in the quote currency."""

    symbol: str
    side: Side
    quantity: Decimal
    price: Decimal
    fee: Decimal

    @property
    def notional(self) -> Decimal:
        return EXACT.multiply(self.quantity, self.price)


def _positive(name: str, value: Decimal) -> Decimal:
    if not value.is_finite() or value <= 0:
        raise InvalidAmount(name, value)
    return value


def conservation_gap(account: Account) -> Decimal:
    """``lhs - net_deposits`` of the identity in the module docstring: always exactly 0."""
    with localcontext(EXACT):
        lhs = (
            account.cash
            + account.reserved
            + account.holdings_cost
            + account.fees_paid
            - (account.realized_pnl + account.sell_fees)
        )
        return lhs - account.net_deposits


def deposit(account: Account, amount: Decimal) -> Account:
    _positive("amount", amount)
    with localcontext(EXACT):
        return replace(
            account, cash=account.cash + amount, net_deposits=account.net_deposits + amount
        )


def withdraw(account: Account, amount: Decimal) -> Account:
    """Free cash only: reserved cash stays with its resting order."""
    _positive("amount", amount)
    if amount > account.cash:
        raise InsufficientCash(required=amount, available=account.cash)
    with localcontext(EXACT):
        return replace(
            account, cash=account.cash - amount, net_deposits=account.net_deposits - amount
        )


def reserve(account: Account, amount: Decimal) -> Account:
    """Set aside cash for a resting buy (its notional at the limit price plus its fee)."""
    _positive("amount", amount)
    if amount > account.cash:
        raise InsufficientCash(required=amount, available=account.cash)
    with localcontext(EXACT):
        return replace(account, cash=account.cash - amount, reserved=account.reserved + amount)


def release(account: Account, amount: Decimal) -> Account:
    """Give a cancelled (or filled) resting buy's reservation back to free cash."""
    _positive("amount", amount)
    if amount > account.reserved:
        raise InsufficientReserved(required=amount, available=account.reserved)
    with localcontext(EXACT):
        return replace(account, cash=account.cash + amount, reserved=account.reserved - amount)


def reserve_quantity(account: Account, symbol: str, quantity: Decimal) -> Account:
    """Set aside ``quantity`` of a holding for a resting sell (free quantity only)."""
    _positive("quantity", quantity)
    held = account.holdings.get(symbol)
    available = held.free if held else ZERO
    if held is None or quantity > available:
        raise InsufficientQuantity(symbol, required=quantity, available=available)
    with localcontext(EXACT):
        holding = replace(held, reserved=held.reserved + quantity)
    return replace(account, holdings=_frozen({**account.holdings, symbol: holding}))


def release_quantity(account: Account, symbol: str, quantity: Decimal) -> Account:
    """Give a cancelled (or filled) resting sell's quantity back to the free quantity."""
    _positive("quantity", quantity)
    held = account.holdings.get(symbol)
    available = held.reserved if held else ZERO
    if held is None or quantity > available:
        raise InsufficientReservedQuantity(symbol, required=quantity, available=available)
    with localcontext(EXACT):
        holding = replace(held, reserved=held.reserved - quantity)
    return replace(account, holdings=_frozen({**account.holdings, symbol: holding}))


def apply_fill(
    account: Account,
    fill: Fill,
    *,
    reserved: Decimal = ZERO,
    reserved_quantity: Decimal = ZERO,
) -> Account:
    """Book a fill. ``reserved``: the reservation of the resting buy it fills, released first
    (so a limit buy pays from its own reservation; any surplus goes back to free cash).
    ``reserved_quantity``: likewise the quantity a resting sell set aside."""
    _positive("quantity", fill.quantity)
    _positive("price", fill.price)
    if not fill.fee.is_finite() or fill.fee < 0:
        raise InvalidAmount("fee", fill.fee)
    if reserved:
        account = release(account, reserved)
    if reserved_quantity:
        account = release_quantity(account, fill.symbol, reserved_quantity)
    if fill.side == "buy":
        return _buy(account, fill)
    return _sell(account, fill)


def _buy(account: Account, fill: Fill) -> Account:
    with localcontext(EXACT):
        notional = fill.quantity * fill.price
        required = notional + fill.fee
        if required > account.cash:
            raise InsufficientCash(required=required, available=account.cash)
        held = account.holdings.get(fill.symbol)
        holding = (
            Holding(held.quantity + fill.quantity, held.cost + notional, held.reserved)
            if held
            else Holding(fill.quantity, notional)
        )
        return replace(
            account,
            cash=account.cash - required,
            holdings=_frozen({**account.holdings, fill.symbol: holding}),
            fees_paid=account.fees_paid + fill.fee,
        )


def _sell(account: Account, fill: Fill) -> Account:
    held = account.holdings.get(fill.symbol)
    available = held.free if held else ZERO
    if held is None or fill.quantity > available:
        raise InsufficientQuantity(fill.symbol, required=fill.quantity, available=available)
    if fill.quantity == held.quantity:
        cost_out = held.cost
    else:
        share = COST_SHARE.divide(COST_SHARE.multiply(held.cost, fill.quantity), held.quantity)
        cost_out = share.quantize(COST_QUANTUM, context=COST_SHARE)
    with localcontext(EXACT):
        proceeds = fill.quantity * fill.price - fill.fee
        holdings = dict(account.holdings)
        if fill.quantity == held.quantity:
            del holdings[fill.symbol]
        else:
            holdings[fill.symbol] = Holding(
                held.quantity - fill.quantity, held.cost - cost_out, held.reserved
            )
        return replace(
            account,
            cash=account.cash + proceeds,
            holdings=_frozen(holdings),
            realized_pnl=account.realized_pnl + proceeds - cost_out,
            fees_paid=account.fees_paid + fill.fee,
            sell_fees=account.sell_fees + fill.fee,
        )


# ---------------------------------------------------------------- views


@dataclass(frozen=True, slots=True)
class HoldingView:
    """A holding at a price. With no price known, ``price`` is None and it is valued at cost."""

    symbol: str
    quantity: Decimal
    avg_cost: Decimal
    cost: Decimal
    price: Decimal | None
    market_value: Decimal
    unrealized_pnl: Decimal
    unrealized_pnl_pct: Decimal
    allocation_pct: Decimal


@dataclass(frozen=True, slots=True)
class AccountView:
    """What ``GET /portfolio`` shows: ``total_value`` = cash + reserved + Σ market value."""

    cash: Decimal
    reserved: Decimal
    holdings: tuple[HoldingView, ...]
    realized_pnl: Decimal
    fees_paid: Decimal
    total_value: Decimal


def value_account(account: Account, prices: Mapping[str, Decimal]) -> AccountView:
    """Value every holding at ``prices`` (symbol -> latest price); holdings in symbol order.

    Market values and P&L are exact (products and sums); the average cost and the percentages
    divide and round in the ambient context (28 digits by default). Allocation is of the total
    value, cash included; with a total of 0 every allocation is 0.
    """
    with localcontext(EXACT):
        marked: list[tuple[str, Holding, Decimal | None, Decimal]] = []
        for symbol in sorted(account.holdings):
            holding = account.holdings[symbol]
            price = prices.get(symbol)
            value = holding.quantity * price if price is not None else holding.cost
            marked.append((symbol, holding, price, value))
        total = account.cash + account.reserved + sum((m[3] for m in marked), ZERO)
    views = []
    for symbol, holding, price, value in marked:
        pnl = EXACT.subtract(value, holding.cost)
        views.append(
            HoldingView(
                symbol=symbol,
                quantity=holding.quantity,
                avg_cost=holding.avg_cost,
                cost=holding.cost,
                price=price,
                market_value=value,
                unrealized_pnl=pnl,
                unrealized_pnl_pct=pnl / holding.cost * HUNDRED if holding.cost else ZERO,
                allocation_pct=value / total * HUNDRED if total else ZERO,
            )
        )
    return AccountView(
        cash=account.cash,
        reserved=account.reserved,
        holdings=tuple(views),
        realized_pnl=account.realized_pnl,
        fees_paid=account.fees_paid,
        total_value=total,
    )
