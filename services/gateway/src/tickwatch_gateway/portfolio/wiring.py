"""The portfolio proxy: one HTTP client session to the portfolio service, and its routes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from tickwatch_gateway.http.openapi import Api
from tickwatch_gateway.portfolio import routes
from tickwatch_gateway.portfolio.keys import PORTFOLIO
from tickwatch_gateway.portfolio.proxy import PortfolioClient
from tickwatch_gateway.portfolio.settings import PortfolioSettings


def install_portfolio(app: web.Application, settings: PortfolioSettings) -> None:
    async def client(app: web.Application) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(total=settings.portfolio_timeout_s, connect=2)
        async with aiohttp.ClientSession(timeout=timeout, raise_for_status=False) as session:
            app[PORTFOLIO] = PortfolioClient(
                session, settings.portfolio_url, settings.internal_api_secret
            )
            yield

    app.cleanup_ctx.append(client)


def register_portfolio(api: Api) -> None:
    """``/portfolio`` in the OpenAPI document."""
    routes.register(api)
