"""The portfolio service's settings: environment variables, or ``.env``."""

from __future__ import annotations

from decimal import Decimal

from tickwatch_common.settings import KafkaSettings, PostgresSettings


class Settings(KafkaSettings, PostgresSettings):
    """KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL are required; the rest have defaults."""

    portfolio_port: int = 8084
    portfolio_starting_cash: Decimal = Decimal("10000")
    """Paper cash a new account starts with, in the quote currency (DESIGN.md §3)."""
    portfolio_quote_currency: str = "USDT"
