"""``/api/v1/portfolio``: the caller's paper portfolio, served by the portfolio service.

Each route checks what the public API promises (credentials and scopes, the body and query as
the OpenAPI document states them, a known symbol), then forwards one call, signed for the
caller's user, and answers what the service answers: its fills, amounts and problems. Prices
never come from a client: an order body has no price field, and one sent is refused (422).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from tickwatch_common.text import CleanText

from tickwatch_gateway.accounts import require
from tickwatch_gateway.http.api_types import PositiveDecimal
from tickwatch_gateway.http.openapi import Api
from tickwatch_gateway.http.problems import Handler, ProblemError, parse_body, parse_query
from tickwatch_gateway.market import SYMBOLS
from tickwatch_gateway.portfolio.keys import PORTFOLIO
from tickwatch_gateway.portfolio.proxy import FORWARDED_HEADERS

SymbolIn = Annotated[str, CleanText(min_length=1, max_length=41), Field(examples=["BTC-USDT"])]
Side = Literal["buy", "sell"]


class OrderBody(BaseModel):
    """A market order fills at once at the portfolio's latest tick; a limit order rests until
    a tick reaches ``limit_price``. Send ``Idempotency-Key`` to make a retry safe."""

    model_config = ConfigDict(extra="forbid")

    symbol: SymbolIn
    side: Side
    quantity: PositiveDecimal
    type: Literal["market", "limit"] = "market"
    limit_price: PositiveDecimal | None = None


class TradeBody(BaseModel):
    """The market-order shortcut: no price (a ``price`` field is refused with 422)."""

    model_config = ConfigDict(extra="forbid")

    symbol: SymbolIn
    side: Side
    quantity: PositiveDecimal


class CashFlowBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: PositiveDecimal


class PageQuery(BaseModel):
    page: int = Field(default=1, ge=1, le=100_000)
    per_page: int = Field(default=50, ge=1, le=200)


class OrdersQuery(PageQuery):
    status: Literal["open", "filled", "cancelled", "rejected"] | None = None


class RangeQuery(BaseModel):
    range: Literal["1d", "7d", "30d", "ytd", "all"] = "30d"


async def _forward(
    request: web.Request, method: str, path: str, scope: str, body: BaseModel | None = None
) -> web.Response:
    principal = require(request, scope=scope)
    raw_query = request.rel_url.raw_query_string
    path_qs = f"{path}?{raw_query}" if raw_query else path
    data = b"" if body is None else body.model_dump_json(exclude_none=True).encode()
    headers = {h: request.headers[h] for h in FORWARDED_HEADERS if h in request.headers}
    status, content_type, answer = await request.app[PORTFOLIO].call(
        method, path_qs, principal.user_id, data, headers
    )
    return web.Response(status=status, body=answer, content_type=content_type)


def _known(request: web.Request, symbol: str) -> str:
    canonical = request.app[SYMBOLS].resolve(symbol)
    if canonical is None:
        raise ProblemError(
            422,
            f"invalid body: symbol {symbol[:40]!r} is not one this API serves (GET /markets)",
            errors=[{"field": "symbol", "in": "body", "message": "unknown symbol"}],
        )
    return canonical


async def post_order(request: web.Request) -> web.Response:
    require(request, scope="portfolio:write")
    body = await parse_body(request, OrderBody)
    body = body.model_copy(update={"symbol": _known(request, body.symbol)})
    return await _forward(request, "POST", "/internal/orders", "portfolio:write", body)


async def post_trade(request: web.Request) -> web.Response:
    require(request, scope="portfolio:write")
    trade = await parse_body(request, TradeBody)
    order = OrderBody(
        symbol=_known(request, trade.symbol), side=trade.side, quantity=trade.quantity
    )
    return await _forward(request, "POST", "/internal/orders", "portfolio:write", order)


async def list_orders(request: web.Request) -> web.Response:
    parse_query(request, OrdersQuery)
    return await _forward(request, "GET", "/internal/orders", "read")


async def cancel_order(request: web.Request) -> web.Response:
    order_id = request.match_info["id"]
    if not order_id.isascii() or not order_id.replace("-", "").isalnum() or len(order_id) > 64:
        raise ProblemError(404, "no such order")
    return await _forward(request, "DELETE", f"/internal/orders/{order_id}", "portfolio:write")


async def get_portfolio(request: web.Request) -> web.Response:
    return await _forward(request, "GET", "/internal/portfolio", "read")


async def list_trades(request: web.Request) -> web.Response:
    parse_query(request, PageQuery)
    return await _forward(request, "GET", "/internal/trades", "read")


async def get_history(request: web.Request) -> web.Response:
    parse_query(request, RangeQuery)
    return await _forward(request, "GET", "/internal/history", "read")


async def get_performance(request: web.Request) -> web.Response:
    parse_query(request, RangeQuery)
    return await _forward(request, "GET", "/internal/performance", "read")


async def post_reset(request: web.Request) -> web.Response:
    """Start over: open orders cancelled, holdings and ledger cleared, the starting cash back."""
    return await _forward(request, "POST", "/internal/reset", "portfolio:write")


def _cash_flow(path: str) -> Handler:
    async def post(request: web.Request) -> web.Response:
        require(request, scope="portfolio:write")
        body = await parse_body(request, CashFlowBody)
        return await _forward(request, "POST", path, "portfolio:write", body)

    post.__name__ = f"post_{path.rsplit('/', 1)[-1]}"
    return post


def register(api: Api) -> None:
    common: dict[str, Any] = {"tag": "portfolio", "auth": "user"}
    write = {**common, "scope": "portfolio:write"}
    read = {**common, "scope": "read"}
    api.add("GET", "/portfolio", get_portfolio, summary="Cash, holdings, P&L", **read)
    api.add(
        "POST",
        "/portfolio/orders",
        post_order,
        summary="Place a market or limit order",
        body=OrderBody,
        status=201,
        **write,
    )
    api.add(
        "GET", "/portfolio/orders", list_orders, summary="Your orders", query=OrdersQuery, **read
    )
    api.add(
        "DELETE",
        "/portfolio/orders/{id}",
        cancel_order,
        summary="Cancel a resting order",
        path_params={"id": "the order's id"},
        **write,
    )
    api.add(
        "POST",
        "/portfolio/trades",
        post_trade,
        summary="Buy or sell at market (shortcut)",
        body=TradeBody,
        status=201,
        **write,
    )
    api.add(
        "GET",
        "/portfolio/trades",
        list_trades,
        summary="Your fills, newest first (`Accept: text/csv` for CSV)",
        query=PageQuery,
        **read,
    )
    for kind in ("deposits", "withdrawals"):
        api.add(
            "POST",
            f"/portfolio/{kind}",
            _cash_flow(f"/internal/{kind}"),
            summary=f"Paper cash {kind[:-1]}",
            body=CashFlowBody,
            status=201,
            **write,
        )
    api.add(
        "POST",
        "/portfolio/reset",
        post_reset,
        summary="Start over with the starting cash (Idempotency-Key honoured)",
        **write,
    )
    api.add(
        "GET",
        "/portfolio/history",
        get_history,
        summary="Value over time",
        query=RangeQuery,
        **read,
    )
    api.add(
        "GET",
        "/portfolio/performance",
        get_performance,
        summary="Time- and money-weighted return, drawdown, versus BTC",
        query=RangeQuery,
        **read,
    )
