"""The portfolio proxy's typed keys."""

from __future__ import annotations

import asyncio

from aiohttp import web

from tickwatch_gateway.portfolio.proxy import PortfolioClient

PORTFOLIO = web.AppKey("portfolio_client", PortfolioClient)
# Set once the valuation push reads from the end of portfolio.valuations.v1 (tests wait on it).
VALUATIONS_POSITIONED = web.AppKey("valuations_positioned", asyncio.Event)
