"""The portfolio proxy: one HTTP client session to the portfolio service, and its routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from tickwatch_gateway.http.openapi import Api
from tickwatch_gateway.market import HUB
from tickwatch_gateway.portfolio import routes
from tickwatch_gateway.portfolio.keys import PORTFOLIO, VALUATIONS_POSITIONED
from tickwatch_gateway.portfolio.live import ValuationPush, push_valuations
from tickwatch_gateway.portfolio.proxy import PortfolioClient
from tickwatch_gateway.portfolio.settings import PortfolioSettings
from tickwatch_gateway.runtime.keys import TASKS
from tickwatch_gateway.runtime.shutdown import stop_tasks


def install_portfolio(app: web.Application, settings: PortfolioSettings) -> None:
    async def client(app: web.Application) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(total=settings.portfolio_timeout_s, connect=2)
        async with aiohttp.ClientSession(timeout=timeout, raise_for_status=False) as session:
            app[PORTFOLIO] = PortfolioClient(
                session, settings.portfolio_url, settings.internal_api_secret
            )
            yield

    async def live_push(app: web.Application) -> AsyncIterator[None]:
        positioned = app[VALUATIONS_POSITIONED] = asyncio.Event()
        task = asyncio.create_task(
            push_valuations(settings, ValuationPush(app[HUB]), positioned),
            name="valuation-push",
        )
        app[TASKS].append(task)
        try:
            yield
        finally:
            await stop_tasks([task], settings.shutdown_timeout_s)

    app.cleanup_ctx.extend([client, live_push])


def register_portfolio(api: Api) -> None:
    """``/portfolio`` in the OpenAPI document."""
    routes.register(api)
