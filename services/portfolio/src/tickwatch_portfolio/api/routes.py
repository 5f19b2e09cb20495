"""The internal API on PORTFOLIO_PORT, beside ``/health``, ``/ready`` and ``/metrics``.

Every ``/internal/...`` route needs the gateway's signature: without it, or with a forged or
stale one, 401 (problem+json); the user is the one the gateway signed for, never a path or body
field. Decimals are strings both ways (a JSON number is read exactly too, never as a float).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

import structlog
from aiohttp import web
from pydantic import SecretStr
from tickwatch_common.internal_auth import InvalidCredential, verify
from tickwatch_common.ops import Check, add_ops_routes

from tickwatch_portfolio.accounting.domain import value_account
from tickwatch_portfolio.ledger.operations import Operations
from tickwatch_portfolio.ledger.store import CashFlowKind, LedgerStore, OrderStatus
from tickwatch_portfolio.market.book import PriceBook
from tickwatch_portfolio.orders.domain import OrderRequest
from tickwatch_portfolio.performance.domain import RANGES, Range
from tickwatch_portfolio.performance.reports import Reports
from tickwatch_portfolio.problems import PROBLEM_JSON, Answer, dec, invalid, problem

log = structlog.get_logger(__name__)

SECRET = web.AppKey("internal_api_secret", SecretStr)
OPERATIONS = web.AppKey("operations", Operations)
STORE = web.AppKey("store", LedgerStore)
BOOK = web.AppKey("book", PriceBook)
REPORTS = web.AppKey("reports", Reports)
USER = web.RequestKey("tickwatch_user", str)
MAX_BODY_BYTES = 64 * 1024
MAX_KEY_LENGTH = 255
PCT = Decimal("0.0001")
ORDER_FIELDS = {"symbol", "side", "quantity", "type", "limit_price"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def respond(answer: Answer) -> web.Response:
    return web.Response(
        status=answer.status,
        body=json.dumps(answer.body).encode(),
        content_type=PROBLEM_JSON if answer.is_problem else "application/json",
    )


class Refused(Exception):
    """A request refused before any operation runs (never stored under an Idempotency-Key)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.body.get("detail"))
        self.answer = answer


@web.middleware
async def internal_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The signature check on ``/internal``; refusals and aiohttp's errors as problems."""
    try:
        if request.path.startswith("/internal"):
            body = await request.read()
            try:
                request[USER] = verify(
                    request.app[SECRET], request.method, request.raw_path, request.headers, body
                )
            except InvalidCredential as exc:
                return respond(problem(401, f"internal credential refused: {exc.reason}"))
        return await handler(request)
    except Refused as exc:
        return respond(exc.answer)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return respond(problem(exc.status, exc.reason))


def _decimal(field: str, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, Decimal, int)):
        raise Refused(invalid(field, f"{field} must be a decimal string"))
    try:
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise Refused(invalid(field, f"{field} must be a decimal string")) from None
    if not number.is_finite():
        raise Refused(invalid(field, f"{field} must be a finite number"))
    return number


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw, parse_float=Decimal, parse_constant=lambda _: None)
    except ValueError:
        raise Refused(invalid("body", "the body must be a JSON object")) from None
    if not isinstance(body, dict):
        raise Refused(invalid("body", "the body must be a JSON object"))
    return body


def _key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not key or len(key) > MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise Refused(invalid("Idempotency-Key", "Idempotency-Key must be 1-255 printable ASCII"))
    return key


def _fingerprint(request: web.Request, body: bytes) -> str:
    return hashlib.sha256(f"{request.method} {request.path}\n".encode() + body).hexdigest()


def parse_order(body: dict[str, Any]) -> OrderRequest:
    """The order a body asks for; a ``price`` is refused (a market order fills at the latest
    tick, never at a client's price), as is any other field the contract does not name."""
    if "price" in body:
        raise Refused(
            invalid("price", "price is not accepted: a market order fills at the latest tick")
        )
    unknown = sorted(set(body) - ORDER_FIELDS)
    if unknown:
        raise Refused(invalid(unknown[0], f"unknown field {unknown[0]}"))
    symbol = body.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise Refused(invalid("symbol", "symbol is required"))
    side = body.get("side")
    if side not in ("buy", "sell"):
        raise Refused(invalid("side", "side must be buy or sell"))
    kind = body.get("type", "market")
    if kind not in ("market", "limit"):
        raise Refused(invalid("type", "type must be market or limit"))
    if "quantity" not in body:
        raise Refused(invalid("quantity", "quantity is required"))
    limit = body.get("limit_price")
    return OrderRequest(
        symbol=symbol.strip().upper(),
        side=side,
        quantity=_decimal("quantity", body["quantity"]),
        type=kind,
        limit_price=None if limit is None else _decimal("limit_price", limit),
    )


def _pct(value: Decimal) -> str:
    return dec(value.quantize(PCT, rounding=ROUND_HALF_EVEN))


async def post_order(request: web.Request) -> web.Response:
    order = parse_order(await _json_object(request))
    answer = await request.app[OPERATIONS].place_order(
        request[USER],
        order,
        key=_key(request),
        fingerprint=_fingerprint(request, await request.read()),
    )
    return respond(answer)


def cash_flow(kind: CashFlowKind) -> Handler:
    async def post(request: web.Request) -> web.Response:
        body = await _json_object(request)
        unknown = sorted(set(body) - {"amount"})
        if unknown:
            raise Refused(invalid(unknown[0], f"unknown field {unknown[0]}"))
        if "amount" not in body:
            raise Refused(invalid("amount", "amount is required"))
        amount = _decimal("amount", body["amount"])
        answer = await request.app[OPERATIONS].move_cash(
            request[USER],
            kind,
            amount,
            key=_key(request),
            fingerprint=_fingerprint(request, await request.read()),
        )
        return respond(answer)

    return post


async def post_reset(request: web.Request) -> web.Response:
    raw = await request.read()
    if raw.strip():
        body = await _json_object(request)
        if body:
            field = sorted(body)[0]
            raise Refused(invalid(field, f"unknown field {field}"))
    answer = await request.app[OPERATIONS].reset(
        request[USER], key=_key(request), fingerprint=_fingerprint(request, raw)
    )
    return respond(answer)


async def get_portfolio(request: web.Request) -> web.Response:
    store = request.app[STORE]
    account = await store.account(request[USER])
    view = value_account(account, request.app[BOOK].prices())
    body = {
        "cash": dec(view.cash),
        "reserved": dec(view.reserved),
        "quote_currency": store.quote_currency,
        "holdings": [
            {
                "symbol": h.symbol,
                "quantity": dec(h.quantity),
                "avg_buy_price": dec(h.avg_cost),
                "current_price": None if h.price is None else dec(h.price),
                "market_value": dec(h.market_value),
                "unrealized_pnl": dec(h.unrealized_pnl),
                "unrealized_pnl_pct": _pct(h.unrealized_pnl_pct),
                "allocation_pct": _pct(h.allocation_pct),
            }
            for h in view.holdings
        ],
        "realized_pnl": dec(view.realized_pnl),
        "fees_paid": dec(view.fees_paid),
        "total_value": dec(view.total_value),
    }
    return web.json_response(body)


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise Refused(invalid(name, f"{name} must be an integer from {low} to {high}"))
    return int(raw)


TRADE_COLUMNS = ("id", "order_id", "symbol", "side", "quantity", "price", "fee", "executed_at")
CSV = "text/csv"


def wants_csv(accept: str) -> bool:
    """Whether ``Accept`` prefers ``text/csv`` to JSON: the higher ``q`` wins, the first listed
    on a tie; a wildcard or no mention of CSV answers JSON."""
    best: tuple[float, int, bool] | None = None
    for i, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        if media.lower() not in (CSV, "application/json"):
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0 and (best is None or q > best[0]):
            best = (q, i, media.lower() == CSV)
    return best is not None and best[2]


def _csv(items: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(TRADE_COLUMNS)
    for item in items:
        writer.writerow(["" if item[c] is None else item[c] for c in TRADE_COLUMNS])
    return out.getvalue()


async def get_trades(request: web.Request) -> web.Response:
    """The page of fills as JSON, or as CSV (RFC 4180, a header row, decimals as exact strings,
    times ISO-8601 UTC) when ``Accept`` prefers ``text/csv``; the page's figures then travel
    as ``X-Page``, ``X-Per-Page`` and ``X-Total-Count``."""
    page = _int_param(request, "page", 1, 1, 1_000_000)
    per_page = _int_param(request, "per_page", 50, 1, 500)
    rows, total = await request.app[STORE].trades(
        request[USER], limit=per_page, offset=(page - 1) * per_page
    )
    items = [
        {
            "id": str(r.id),
            "order_id": None if r.order_id is None else str(r.order_id),
            "symbol": r.symbol,
            "side": r.side,
            "quantity": dec(r.quantity),
            "price": dec(r.price),
            "fee": dec(r.fee),
            "executed_at": r.executed_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        for r in rows
    ]
    if wants_csv(request.headers.get("Accept", "")):
        return web.Response(
            text=_csv(items),
            content_type=CSV,
            charset="utf-8",
            headers={
                "X-Page": str(page),
                "X-Per-Page": str(per_page),
                "X-Total-Count": str(total),
                "Vary": "Accept",
            },
        )
    return web.json_response({"items": items, "page": page, "per_page": per_page, "total": total})


ORDER_STATUSES: tuple[OrderStatus, ...] = ("open", "filled", "cancelled", "rejected")


async def get_orders(request: web.Request) -> web.Response:
    raw = request.query.get("status")
    status = next((s for s in ORDER_STATUSES if s == raw), None)
    if raw is not None and status is None:
        raise Refused(invalid("status", "status must be open, filled, cancelled or rejected"))
    page = _int_param(request, "page", 1, 1, 1_000_000)
    per_page = _int_param(request, "per_page", 50, 1, 500)
    items, total = await request.app[STORE].orders(
        request[USER], status, limit=per_page, offset=(page - 1) * per_page
    )
    return web.json_response({"items": items, "page": page, "per_page": per_page, "total": total})


async def delete_order(request: web.Request) -> web.Response:
    raw = request.match_info["order_id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        return respond(problem(404, f"no order {raw}"))
    return respond(await request.app[OPERATIONS].cancel(request[USER], int(raw)))


def _range(request: web.Request) -> Range:
    raw = request.query.get("range", "1d")
    found = next((r for r in RANGES if r == raw), None)
    if found is None:
        raise Refused(invalid("range", f"range must be one of {', '.join(RANGES)}"))
    return found


async def get_history(request: web.Request) -> web.Response:
    range_ = _range(request)
    return web.json_response(await request.app[REPORTS].history(request[USER], range_))


async def get_performance(request: web.Request) -> web.Response:
    range_ = _range(request)
    return web.json_response(await request.app[REPORTS].performance(request[USER], range_))


def internal_app(
    service: str,
    checks: list[Check],
    secret: SecretStr,
    operations: Operations,
    reports: Reports,
) -> web.Application:
    """The ops routes and the internal API in one application."""
    app = web.Application(middlewares=[internal_only], client_max_size=MAX_BODY_BYTES)
    add_ops_routes(app, service, checks)
    app[SECRET] = secret
    app[OPERATIONS] = operations
    app[STORE] = operations.store
    app[BOOK] = operations.book
    app[REPORTS] = reports
    app.router.add_post("/internal/orders", post_order)
    app.router.add_get("/internal/orders", get_orders)
    app.router.add_delete("/internal/orders/{order_id}", delete_order)
    app.router.add_get("/internal/portfolio", get_portfolio)
    app.router.add_post("/internal/deposits", cash_flow("deposit"))
    app.router.add_post("/internal/withdrawals", cash_flow("withdrawal"))
    app.router.add_get("/internal/trades", get_trades)
    app.router.add_post("/internal/reset", post_reset)
    app.router.add_get("/internal/history", get_history)
    app.router.add_get("/internal/performance", get_performance)
    return app


@asynccontextmanager
async def serving(app: web.Application, host: str, port: int) -> AsyncIterator[web.AppRunner]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    try:
        yield runner
    finally:
        await runner.cleanup()
