"""The portfolio proxy's settings: where the portfolio service is and the key to sign with."""

from __future__ import annotations

from pydantic import Field
from tickwatch_common.secret_strength import StrongSecret

from tickwatch_gateway.runtime.settings import RuntimeSettings


class PortfolioSettings(RuntimeSettings):
    portfolio_url: str = Field(
        default="http://127.0.0.1:8084",
        description="Base URL of the portfolio service's internal API",
    )
    internal_api_secret: StrongSecret | None = Field(
        default=None,
        description="The HMAC key shared with the portfolio service (the portfolio's rule:"
        " tickwatch_common.secret_strength); unset, /portfolio answers 503",
    )
    portfolio_timeout_s: float = Field(
        default=10.0, gt=0, description="Bound on one call to the portfolio service"
    )
