"""The accounts' settings: token signing and lifetimes, API-key bookkeeping."""

from __future__ import annotations

from pydantic import Field
from tickwatch_common.secret_strength import StrongSecret

from tickwatch_gateway.runtime.settings import RuntimeSettings


class AccountSettings(RuntimeSettings):
    jwt_secret: StrongSecret = Field(
        description="HS256 signing key: 32+ bytes, no default or low-entropy key"
        " (tickwatch_common.secret_strength)"
    )
    jwt_issuer: str = "tickwatch"
    jwt_audience: str = "tickwatch-api"
    access_token_ttl_s: int = 900
    refresh_token_ttl_s: int = 30 * 24 * 3600
    api_key_touch_interval_s: float = Field(
        default=60, description="An API key's last_used_at is written at most this often"
    )
    ws_session_check_s: float = Field(
        default=2.0,
        gt=0,
        description="How often the WebSockets of a login are checked against logout and token"
        " expiry (a logout on this replica is acted on at once)",
    )
