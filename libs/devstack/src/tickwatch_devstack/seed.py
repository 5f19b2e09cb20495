"""``python -m tickwatch_devstack seed`` (``make seed``): demo users, alerts and portfolios.

A newcomer's ``make run`` starts empty; this fills it as a user would, through the public API
only (register or log in, ``POST /alerts``, portfolio deposits and orders), so every rule of the
system applies to the demo data too. Targets are set from the current prices (``GET /prices``),
close enough that some alerts fire within minutes of the replay session.

Running it again changes nothing: a user who exists is logged in, an alert whose note carries
its marker (``[seed:<key>]``) is left alone, and each deposit and order is posted under a stable
``Idempotency-Key`` (derived from the user and the step), so the portfolio service answers a
repeat with its first answer instead of trading twice, even after a crash half-way. A refusal
(a stale price, 409) is remembered under its key too, so a step that was refused is tried
again under the next key of a fixed chain (``…:2``, ``…:3``): a rerun walks the same chain.

The portfolio's history (``/portfolio/history``) is built from valuation snapshots the
portfolio service takes as time passes; a seed cannot make time pass, and writing ledger
entries in the past would bend the accounting, so the history starts now and accrues.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal, TextIO

import aiohttp
from tickwatch_common.events.alerts import Condition, Frequency

Side = Literal["buy", "sell"]

PRICE_WAIT_S = 60.0  # a fresh `make run` publishes its first replayed ticks within seconds
FRESH_PRICE_S = 20.0  # below the portfolio's 30 s: a market order must not meet a stale price
RATE_LIMIT_WAIT_S = 65.0  # the login rate limit is per minute
REFUSED_ATTEMPTS = 5  # keys of a step tried in turn while the portfolio answers 409
ALERTS_PAGE = 100


# ---------------------------------------------------------------- the demo data


@dataclass(frozen=True)
class DemoAlert:
    """An alert, its target ``offset_pct`` percent from the current price (``pct_change``:
    ``pct`` within ``window_seconds``). ``key`` is its marker in the note."""

    key: str
    symbol: str
    condition: Condition
    note: str
    offset_pct: str | None = None
    pct: str | None = None
    window_seconds: int | None = None
    frequency: Frequency = "once"
    cooldown_seconds: int = 0
    expires_in_days: int | None = None
    webhook: bool = False


@dataclass(frozen=True)
class Deposit:
    key: str
    amount: str


@dataclass(frozen=True)
class Order:
    """A market order, or (``limit_offset_pct`` set) a limit order that far from the price."""

    key: str
    symbol: str
    side: Side
    quantity: str
    limit_offset_pct: str | None = None


@dataclass(frozen=True)
class DemoUser:
    email: str
    password: str
    name: str
    alerts: tuple[DemoAlert, ...]
    portfolio: tuple[Deposit | Order, ...]


DEMO_USERS = (
    DemoUser(
        email="demo@tickwatch.local",
        password="tickwatch-demo",
        name="Demo Trader",
        alerts=(
            DemoAlert(
                "btc-above",
                "BTC-USDT",
                "above",
                "BTC a notch above where it was when seeded: fires soon in replay",
                offset_pct="0.1",
            ),
            DemoAlert(
                "btc-below",
                "BTC-USDT",
                "below",
                "BTC a notch below where it was when seeded",
                offset_pct="-0.1",
            ),
            DemoAlert(
                "eth-crosses-up",
                "ETH-USDT",
                "crosses_up",
                "ETH crossing up, again after each 5-minute cooldown",
                offset_pct="0.05",
                frequency="recurring",
                cooldown_seconds=300,
            ),
            DemoAlert(
                "eth-crosses-down",
                "ETH-USDT",
                "crosses_down",
                "ETH crossing down, again after each 5-minute cooldown",
                offset_pct="-0.05",
                frequency="recurring",
                cooldown_seconds=300,
            ),
            DemoAlert(
                "sol-pct-change",
                "SOL-USDT",
                "pct_change",
                "SOL moved 0.3 % within 10 minutes",
                pct="0.3",
                window_seconds=600,
                frequency="recurring",
                cooldown_seconds=900,
            ),
            DemoAlert(
                "btc-moon-expiring",
                "BTC-USDT",
                "above",
                "BTC 10 % up within a week (expires otherwise)",
                offset_pct="10",
                expires_in_days=7,
            ),
            DemoAlert(
                "eth-webhook",
                "ETH-USDT",
                "pct_change",
                "ETH moved 0.1 % within 5 minutes, either way: to the local webhook catcher",
                pct="0.1",
                window_seconds=300,
                frequency="recurring",
                cooldown_seconds=120,
                webhook=True,
            ),
        ),
        portfolio=(
            Deposit("deposit", "5000"),
            Order("buy-btc", "BTC-USDT", "buy", "0.02"),
            Order("buy-eth", "ETH-USDT", "buy", "0.5"),
            Order("buy-sol", "SOL-USDT", "buy", "10"),
            Order("sell-sol", "SOL-USDT", "sell", "4"),
            Order("limit-buy-btc", "BTC-USDT", "buy", "0.01", limit_offset_pct="-3"),
        ),
    ),
    DemoUser(
        email="alice@tickwatch.local",
        password="tickwatch-alice",
        name="Alice Example",
        alerts=(
            DemoAlert(
                "xrp-below",
                "XRP-USDT",
                "below",
                "XRP 1 % down: a buying chance",
                offset_pct="-1",
            ),
            DemoAlert(
                "bnb-above-expiring",
                "BNB-USDT",
                "above",
                "BNB 5 % up within 30 days",
                offset_pct="5",
                expires_in_days=30,
            ),
        ),
        portfolio=(
            Order("buy-xrp", "XRP-USDT", "buy", "1000"),
            Order("buy-bnb", "BNB-USDT", "buy", "2"),
            Order("limit-sell-bnb", "BNB-USDT", "sell", "1", limit_offset_pct="5"),
        ),
    ),
)


# ---------------------------------------------------------------- pure: bodies from the data


def marker(key: str) -> str:
    return f"[seed:{key}]"


def price_at(price: Decimal, offset_pct: str) -> Decimal:
    """``price`` moved by ``offset_pct`` percent, to a cent (four places under 10)."""
    step = Decimal("0.0001") if price < 10 else Decimal("0.01")
    return (price * (1 + Decimal(offset_pct) / 100)).quantize(step, rounding=ROUND_HALF_EVEN)


def alert_body(
    alert: DemoAlert, price: Decimal, now: datetime, webhook_url: str | None
) -> dict[str, Any]:
    """The body of ``POST /alerts`` for ``alert`` at the current ``price``."""
    body: dict[str, Any] = {
        "symbol": alert.symbol,
        "condition": alert.condition,
        "frequency": alert.frequency,
        "cooldown_seconds": alert.cooldown_seconds,
        "note": f"{alert.note} {marker(alert.key)}",
    }
    if alert.condition == "pct_change":
        body.update(pct=alert.pct, window_seconds=alert.window_seconds)
    else:
        assert alert.offset_pct is not None
        body["target_price"] = str(price_at(price, alert.offset_pct))
    if alert.expires_in_days is not None:
        expires = now + timedelta(days=alert.expires_in_days)
        body["expires_at"] = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    if alert.webhook:
        body.update(channels=["email", "webhook"], webhook_url=webhook_url)
    return body


def order_body(order: Order, price: Decimal) -> dict[str, Any]:
    body: dict[str, Any] = {
        "symbol": order.symbol,
        "side": order.side,
        "quantity": order.quantity,
        "type": "market",
    }
    if order.limit_offset_pct is not None:
        body.update(type="limit", limit_price=str(price_at(price, order.limit_offset_pct)))
    return body


def step_keys(user: DemoUser, step: Deposit | Order) -> list[str]:
    """The Idempotency-Keys a step is tried under, in turn (the next after a refusal)."""
    first = f"tickwatch-seed:{user.email}:{step.key}"
    return [first] + [f"{first}:{n}" for n in range(2, REFUSED_ATTEMPTS + 1)]


def symbols(users: Iterable[DemoUser]) -> list[str]:
    wanted: dict[str, None] = {}
    for user in users:
        for alert in user.alerts:
            wanted[alert.symbol] = None
        for step in user.portfolio:
            if isinstance(step, Order):
                wanted[step.symbol] = None
    return list(wanted)


# ---------------------------------------------------------------- the API, as a client


class SeedError(RuntimeError):
    """The seed cannot go on; the message says why in one line."""


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]

    def detail(self) -> str:
        if isinstance(self.body, dict):
            return str(self.body.get("detail") or self.body.get("title") or self.body)[:300]
        return str(self.body)[:300]


class Gateway:
    """The public API (``/api/v1``) as the seed uses it: JSON in and out, a bearer token."""

    def __init__(self, http: aiohttp.ClientSession, base: str, out: TextIO) -> None:
        self.http, self.base, self.out = http, base.rstrip("/"), out

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str = "",
        key: str | None = None,
    ) -> Answer:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if key is not None:
            headers["Idempotency-Key"] = key
        waited = 0.0
        while True:
            try:
                async with self.http.request(
                    method, f"{self.base}/api/v1{path}", json=body, headers=headers
                ) as resp:
                    data = await resp.json(content_type=None) if resp.content_length != 0 else None
                    answer = Answer(resp.status, data, dict(resp.headers))
            except aiohttp.ClientConnectionError:
                raise SeedError(
                    f"no Tickwatch gateway answers at {self.base}: is `make run` running?"
                    " (--url names another)"
                ) from None
            except (TimeoutError, ValueError) as exc:
                raise SeedError(f"{method} {path} at {self.base}: {exc!r}") from None
            if answer.status != 429:
                return answer
            retry = float(answer.headers.get("Retry-After") or 1)
            if waited + retry > RATE_LIMIT_WAIT_S:
                raise SeedError(f"{method} {path}: rate limited for {retry:.0f} s more")
            print(f"  (rate limited: waiting {retry:.0f} s as the gateway asks)", file=self.out)
            await asyncio.sleep(retry)
            waited += retry

    async def expect(
        self, method: str, path: str, body: Any = None, *, token: str = "", ok: int = 200
    ) -> Any:
        answer = await self.call(method, path, body, token=token)
        if answer.status != ok:
            raise SeedError(f"{method} {path} answered {answer.status}: {answer.detail()}")
        return answer.body


# ---------------------------------------------------------------- the seed


async def fresh_prices(api: Gateway, wanted: list[str], wait_s: float) -> dict[str, Decimal]:
    """The current price of each symbol, waiting up to ``wait_s`` until each is fresh."""
    deadline = time.monotonic() + wait_s
    while True:
        body = await api.expect("GET", f"/prices?symbols={','.join(wanted)}")
        now_ms = time.time() * 1000
        fresh = {
            item["symbol"]: Decimal(item["price"])
            for item in body["items"]
            if now_ms - _epoch_ms(item["ts"]) <= FRESH_PRICE_S * 1000
        }
        missing = [s for s in wanted if s not in fresh]
        if not missing:
            return fresh
        if time.monotonic() > deadline:
            raise SeedError(
                f"no fresh price for {', '.join(missing)} within {wait_s:.0f} s"
                " (is the ingestor running? `python -m tickwatch_devstack status`)"
            )
        await asyncio.sleep(0.5)


def _epoch_ms(ts: Any) -> float:
    if isinstance(ts, int | float):
        return float(ts)
    return datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp() * 1000


async def sign_in(api: Gateway, user: DemoUser, out: TextIO) -> str:
    """Log in; register first when the account does not exist. Answers the access token."""
    creds = {"email": user.email, "password": user.password}
    answer = await api.call("POST", "/auth/login", creds)
    if answer.status == 401:
        registered = await api.call("POST", "/auth/register", {**creds, "name": user.name})
        if registered.status == 409:
            raise SeedError(f"{user.email} exists with another password: cannot seed it")
        if registered.status != 201:
            raise SeedError(f"registering {user.email}: {registered.status} {registered.detail()}")
        print(f"user {user.email}: registered", file=out)
        answer = await api.call("POST", "/auth/login", creds)
    else:
        print(f"user {user.email}: already seeded (logged in)", file=out)
    if answer.status != 200:
        raise SeedError(f"logging in {user.email}: {answer.status} {answer.detail()}")
    return str(answer.body["access_token"])


async def existing_notes(api: Gateway, token: str) -> list[str]:
    notes: list[str] = []
    page = 1
    while True:
        body = await api.expect("GET", f"/alerts?page={page}&per_page={ALERTS_PAGE}", token=token)
        notes += [item.get("note") or "" for item in body["items"]]
        if page * ALERTS_PAGE >= body["total"]:
            return notes
        page += 1


async def seed_alerts(
    api: Gateway,
    user: DemoUser,
    token: str,
    prices: dict[str, Decimal],
    webhook_url: str | None,
    out: TextIO,
) -> None:
    notes = await existing_notes(api, token)
    now = datetime.now(UTC)
    for alert in user.alerts:
        label = f"  alert {alert.key} ({alert.condition} {alert.symbol})"
        if any(marker(alert.key) in note for note in notes):
            print(f"{label}: already seeded", file=out)
            continue
        if alert.webhook and webhook_url is None:
            print(f"{label}: skipped, no webhook catcher reachable (see --webhook-url)", file=out)
            continue
        body = alert_body(alert, prices[alert.symbol], now, webhook_url)
        answer = await api.call("POST", "/alerts", body, token=token)
        if answer.status == 422 and alert.webhook:
            print(
                f"{label}: skipped, the gateway refuses the webhook URL ({answer.detail()});"
                " `make run` allows loopback webhooks while GATEWAY_HOST is loopback",
                file=out,
            )
            continue
        if answer.status != 201:
            raise SeedError(f"{label.strip()}: {answer.status} {answer.detail()}")
        target = body.get("target_price") or f"{body['pct']} % in {body['window_seconds']} s"
        extra = f", webhook secret {answer.body['webhook_secret']}" if alert.webhook else ""
        print(f"{label}: created at {target}{extra}", file=out)


def already_placed(order: Order, ledger: list[dict[str, Any]]) -> bool:
    """Whether the account's orders hold ``order`` (by symbol, side, type and quantity), in
    any state but refused: a limit order's price follows the market, so its body, and with it
    its Idempotency-Key's fingerprint, differs on a rerun; the ledger says it was placed."""
    kind = "limit" if order.limit_offset_pct is not None else "market"
    return any(
        o["symbol"] == order.symbol
        and o["side"] == order.side
        and o["type"] == kind
        and Decimal(o["quantity"]) == Decimal(order.quantity)
        and o["status"] != "rejected"
        for o in ledger
    )


async def seed_portfolio(
    api: Gateway, user: DemoUser, token: str, prices: dict[str, Decimal], out: TextIO
) -> None:
    ledger = (await api.expect("GET", "/portfolio/orders?per_page=200", token=token))["items"]
    for step in user.portfolio:
        if isinstance(step, Deposit):
            label = f"  deposit {step.amount} USDT"
            cash_before = Decimal((await api.expect("GET", "/portfolio", token=token))["cash"])
            body = {"amount": step.amount}
            answer = await _post_step(api, user, step, "/portfolio/deposits", body, token)
            # A repeat answers the first deposit's balance, not this one plus the amount.
            new = Decimal(answer.body["cash"]) == cash_before + Decimal(step.amount)
            print(f"{label}: {'deposited' if new else 'already seeded'}", file=out)
            continue
        kind = "limit" if step.limit_offset_pct is not None else "market"
        label = f"  {kind} {step.side} {step.quantity} {step.symbol}"
        if already_placed(step, ledger):
            print(f"{label}: already seeded", file=out)
            continue
        body = order_body(step, prices[step.symbol])
        answer = await _post_step(api, user, step, "/portfolio/orders", body, token)
        at = answer.body.get("fill_price") or answer.body.get("limit_price")
        print(f"{label}: {answer.body['status']} at {at}", file=out)


async def _post_step(
    api: Gateway, user: DemoUser, step: Deposit | Order, path: str, body: Any, token: str
) -> Answer:
    """Post under the step's keys in turn until one answers 201. A refusal (409: a stale
    price, a symbol not yet trading) is remembered under its key, as is an earlier body (422
    naming the key), so the next key is tried."""
    answer: Answer | None = None
    for key in step_keys(user, step):
        answer = await api.call("POST", path, body, token=token, key=key)
        if answer.status == 201:
            return answer
        reused = answer.status == 422 and "Idempotency-Key" in answer.detail()
        if answer.status != 409 and not reused:
            break
        if answer.status == 409:
            await asyncio.sleep(1)  # the market moves on
    assert answer is not None
    raise SeedError(f"{user.email} {step.key}: {answer.status} {answer.detail()}")


async def webhook_catcher(http: aiohttp.ClientSession, url: str) -> str | None:
    """``url`` when the webhook catcher behind it answers, else ``None``."""
    origin = url.split("/webhooks/", 1)[0]
    try:
        async with http.get(f"{origin}/api/webhooks") as resp:
            return url if resp.status == 200 else None
    except aiohttp.ClientError:
        return None


async def run(
    base: str,
    webhook_url: str,
    out: TextIO,
    users: tuple[DemoUser, ...] = DEMO_USERS,
    price_wait_s: float = PRICE_WAIT_S,
) -> None:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        api = Gateway(http, base, out)
        prices = await fresh_prices(api, symbols(users), price_wait_s)
        hook = await webhook_catcher(http, webhook_url)
        for user in users:
            token = await sign_in(api, user, out)
            await seed_alerts(api, user, token, prices, hook, out)
            await seed_portfolio(api, user, token, prices, out)
    print("", file=out)
    print(f"Demo data on {base}/ (log in on the dashboard):", file=out)
    for user in users:
        print(f"  {user.email:<24} password {user.password}", file=out)
    if hook:
        print(f"  webhook calls: {hook.split('/webhooks/', 1)[0]}/webhooks", file=out)


def seed(base: str, webhook_url: str, out: TextIO) -> int:
    """Exit code 0 when everything is seeded, 1 (and one line on stderr) when it cannot be."""
    import sys

    try:
        asyncio.run(run(base, webhook_url, out))
    except SeedError as exc:
        print(f"devstack seed: {exc}", file=sys.stderr)
        return 1
    return 0
