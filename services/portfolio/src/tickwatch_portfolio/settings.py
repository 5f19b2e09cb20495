"""The portfolio service's settings: environment variables, or ``.env``."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field
from tickwatch_common.internal_auth import InternalApiSettings
from tickwatch_common.settings import KafkaSettings, PostgresSettings


class Settings(KafkaSettings, PostgresSettings, InternalApiSettings):
    """KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL and INTERNAL_API_SECRET are required; the rest
    have defaults."""

    portfolio_port: int = 8084
    portfolio_starting_cash: Decimal = Decimal("10000")
    """Paper cash a new account starts with, in the quote currency (DESIGN.md §3)."""
    portfolio_quote_currency: str = "USDT"
    portfolio_max_price_age_s: float = Field(
        default=30.0, gt=0, description="A market order needs a tick at most this old (else 409)."
    )
    portfolio_fee_rate: Decimal = Field(
        default=Decimal("0.001"), ge=0, lt=1, description="The taker fee, of each fill's notional."
    )
    portfolio_snapshot_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="How often accounts holding anything are valued into a snapshot (at most "
        "one per user per UTC minute).",
    )
