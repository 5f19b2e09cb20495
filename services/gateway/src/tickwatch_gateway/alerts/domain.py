"""Price alerts as data: the rules an alert must satisfy, its effective status, the PATCH merge.

No I/O: the webhook URL's syntax is judged here, its host (resolved, every address public) by
``tickwatch_common.ssrf.check_webhook_target`` in the route, the same guard the notifier applies
when it connects. Every rule answers the field at fault, so the API can say which.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal

from tickwatch_common.events.alerts import AlertStatus, ChannelName, Condition, Frequency
from tickwatch_common.ssrf import webhook_url_problem

MAX_WINDOW_S = 7 * 24 * 3600
MAX_COOLDOWN_S = 30 * 24 * 3600
MAX_PCT = Decimal(1000)
MAX_URL_LENGTH = 2048


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class AlertInvalid(Exception):
    """One or more rules broken; ``errors`` names each field."""

    def __init__(self, errors: Iterable[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in self.errors))


@dataclass(frozen=True)
class AlertSpec:
    """What a user says about an alert (the body of ``POST /alerts``, or the merge of a PATCH)."""

    symbol: str
    condition: Condition
    target_price: Decimal | None = None
    pct: Decimal | None = None
    window_seconds: int | None = None
    frequency: Frequency = "once"
    cooldown_seconds: int = 0
    expires_at_ms: int | None = None
    channels: tuple[ChannelName, ...] = ("email",)
    webhook_url: str | None = None
    note: str | None = None
    status: AlertStatus = "active"


def check_rules(
    spec: AlertSpec,
    *,
    known_symbol: Callable[[str], str | None],
    now_ms: int,
    check_expiry: bool = True,
) -> AlertSpec:
    """The spec with its symbol made canonical, or :class:`AlertInvalid` naming every field."""
    errors: list[FieldError] = []
    symbol = known_symbol(spec.symbol)
    if symbol is None:
        errors.append(FieldError("symbol", f"unknown symbol {spec.symbol[:40]!r}"))
    if spec.condition == "pct_change":
        if spec.target_price is not None:
            errors.append(FieldError("target_price", "pct_change takes pct and window_seconds"))
        if spec.pct is None:
            errors.append(FieldError("pct", "pct_change needs a percentage"))
        elif not Decimal(0) < spec.pct <= MAX_PCT:
            errors.append(FieldError("pct", f"must be positive and at most {MAX_PCT}"))
        if spec.window_seconds is None:
            errors.append(FieldError("window_seconds", "pct_change needs a window in seconds"))
        elif not 1 <= spec.window_seconds <= MAX_WINDOW_S:
            errors.append(FieldError("window_seconds", f"must be within 1..{MAX_WINDOW_S}"))
    else:
        if spec.target_price is None:
            errors.append(FieldError("target_price", f"{spec.condition} needs a target price"))
        elif spec.target_price <= 0:
            errors.append(FieldError("target_price", "must be positive"))
        if spec.pct is not None:
            errors.append(FieldError("pct", "only pct_change takes a percentage"))
        if spec.window_seconds is not None:
            errors.append(FieldError("window_seconds", "only pct_change takes a window"))
    if not 0 <= spec.cooldown_seconds <= MAX_COOLDOWN_S:
        errors.append(FieldError("cooldown_seconds", f"must be within 0..{MAX_COOLDOWN_S}"))
    if not spec.channels:
        errors.append(FieldError("channels", "at least one channel"))
    elif len(set(spec.channels)) != len(spec.channels):
        errors.append(FieldError("channels", "each channel at most once"))
    if "webhook" in spec.channels and not spec.webhook_url:
        errors.append(FieldError("webhook_url", "the webhook channel needs a webhook_url"))
    if spec.webhook_url and "webhook" not in spec.channels:
        errors.append(FieldError("webhook_url", "add 'webhook' to channels to use a webhook_url"))
    if spec.webhook_url:
        problem = webhook_url_problem(spec.webhook_url, MAX_URL_LENGTH)
        if problem:
            errors.append(FieldError("webhook_url", problem))
    expired = spec.expires_at_ms is not None and spec.expires_at_ms <= now_ms
    if check_expiry and expired and spec.status == "active":
        errors.append(FieldError("expires_at", "must be in the future"))
    if errors:
        raise AlertInvalid(errors)
    assert symbol is not None
    return replace(spec, symbol=symbol)


def apply_patch(current: AlertSpec, changes: Mapping[str, object]) -> AlertSpec:
    """``current`` with the fields a PATCH gave (``changes``, by :class:`AlertSpec` field name,
    already in domain types) and what they imply: switching to ``pct_change`` drops a target
    price, switching away drops ``pct`` and ``window_seconds``, and dropping the webhook
    channel drops its URL, unless the PATCH set those too. Not yet checked: see
    :func:`check_rules` and :func:`patch_needs_future_expiry`."""
    values: dict[str, object] = {**current.__dict__, **changes}
    if values["condition"] == "pct_change" and "target_price" not in changes:
        values["target_price"] = None
    if values["condition"] != "pct_change":
        for name in ("pct", "window_seconds"):
            if name not in changes:
                values[name] = None
    channels = values["channels"]
    assert isinstance(channels, tuple)
    if "webhook" not in channels and "webhook_url" not in changes:
        values["webhook_url"] = None
    return AlertSpec(**values)  # type: ignore[arg-type]


def patch_needs_future_expiry(spec: AlertSpec, changed: Iterable[str]) -> bool:
    """A new expiry, or re-activation, must be in the future; an expired alert whose note
    changes stays expired."""
    return spec.status == "active" and bool({"expires_at_ms", "status"} & set(changed))


# The statuses that turn ``expired`` once ``expires_at`` has passed (the store's SQL reads it).
EXPIRING: tuple[AlertStatus, ...] = ("active", "paused")


def effective_status(status: AlertStatus, expires_at_ms: int | None, now_ms: int) -> AlertStatus:
    """``expired`` once an active or paused alert's ``expires_at`` has passed."""
    if status in EXPIRING and expires_at_ms is not None and expires_at_ms <= now_ms:
        return "expired"
    return status


def new_webhook_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


# ---------------------------------------------------------------- webhooks: no SSRF
