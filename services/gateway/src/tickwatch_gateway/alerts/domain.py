"""Price alerts as data: the rules an alert must satisfy, and the webhook address check.

No I/O except :func:`resolve_host`, which the webhook check takes as a parameter so the rules
can be tested with plain data. Every rule answers the field at fault, so the API can say which.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from urllib.parse import urlsplit

from tickwatch_common.events.alerts import AlertStatus, ChannelName, Condition, Frequency

MAX_WINDOW_S = 7 * 24 * 3600
MAX_COOLDOWN_S = 30 * 24 * 3600
MAX_PCT = Decimal(1000)
MAX_URL_LENGTH = 2048

Resolver = Callable[[str], Awaitable[list[str]]]


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
        problem = webhook_url_syntax(spec.webhook_url)
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


def webhook_url_syntax(url: str) -> str | None:
    """Why ``url`` cannot be a webhook, judged by its text alone; ``None`` when it can."""
    if len(url) > MAX_URL_LENGTH:
        return f"at most {MAX_URL_LENGTH} characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "must be an http or https URL"
    if not parts.hostname:
        return "must name a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials"
    if port == 0:
        return "port 0 is not allowed"
    return None


def address_allowed(address: str) -> bool:
    """Only public unicast addresses: never loopback, private, link-local, multicast, reserved."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            ip = mapped
    return ip.is_global and not ip.is_multicast


async def check_webhook_target(url: str, *, allow_private: bool, resolve: Resolver) -> str | None:
    """Why the webhook at ``url`` must be refused (its syntax, or a host that is or resolves to a
    non-public address); ``None`` when it may be called. The notifier checks again when it
    connects (its PublicOnlyResolver), since a name can resolve differently later."""
    problem = webhook_url_syntax(url)
    if problem or allow_private:
        return problem
    host = urlsplit(url).hostname or ""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    elif host.lower().rstrip(".") in ("localhost",) or host.lower().endswith(".localhost"):
        return "must not point at a loopback, private or link-local address"
    else:
        try:
            addresses = await resolve(host)
        except (OSError, TimeoutError, UnicodeError):
            return f"host {host[:80]!r} does not resolve"
        if not addresses:
            return f"host {host[:80]!r} does not resolve"
    if not all(address_allowed(a) for a in addresses):
        return "must not point at a loopback, private or link-local address"
    return None


async def resolve_host(host: str, timeout_s: float = 3.0) -> list[str]:
    """Every address ``host`` resolves to (the system resolver, bounded in time)."""
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), timeout_s)
    return sorted({str(info[4][0]) for info in infos})
