"""The portfolio proxy's typed keys."""

from __future__ import annotations

from aiohttp import web

from tickwatch_gateway.portfolio.proxy import PortfolioClient

PORTFOLIO = web.AppKey("portfolio_client", PortfolioClient)
