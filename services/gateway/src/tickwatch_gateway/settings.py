"""The gateway's settings: each feature's own (see its ``settings``), over the shared runtime's."""

from __future__ import annotations

from tickwatch_gateway.accounts.settings import AccountSettings
from tickwatch_gateway.alerts.settings import AlertSettings
from tickwatch_gateway.http.settings import HttpSettings
from tickwatch_gateway.market.settings import MarketSettings
from tickwatch_gateway.portfolio.settings import PortfolioSettings


class Settings(HttpSettings, AccountSettings, MarketSettings, AlertSettings, PortfolioSettings):
    """Every setting the gateway reads; each feature is handed this object typed as its own."""
