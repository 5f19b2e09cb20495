"""Base event and the value types every event shares."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

SYMBOL_PATTERN = r"^[A-Z0-9]{1,20}-[A-Z0-9]{1,20}$"


def _no_float(value: Any) -> Any:
    """Money travels as decimal strings; a JSON float has already lost digits."""
    if isinstance(value, float):
        raise ValueError("decimal values must be strings, not floats")
    if isinstance(value, bool):
        raise ValueError("decimal values must be strings, not booleans")
    return value


DecimalStr = Annotated[
    Decimal,
    BeforeValidator(_no_float),
    Field(allow_inf_nan=False),
    PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="always"),
]
"""A Decimal that is a plain string on the wire (never exponent form), keeps the exact digits
and refuses floats."""

Symbol = Annotated[str, Field(pattern=SYMBOL_PATTERN, examples=["BTC-USDT"])]
EpochMs = Annotated[int, Field(ge=0, description="Epoch milliseconds, UTC")]
Source = Literal["binance", "coingecko", "coinbase", "replay"]
Interval = Literal["1m", "5m", "15m", "1h", "4h", "1d"]
MINUTE_MS = 60_000
INTERVAL_MS: dict[str, int] = {
    "1m": MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "1h": 60 * MINUTE_MS,
    "4h": 240 * MINUTE_MS,
    "1d": 1440 * MINUTE_MS,
}
"""The length of each candle interval (every :data:`Interval`), in milliseconds."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Event(BaseModel):
    """All events: JSON objects with ``"v": 1``; unknown fields are ignored (additive change)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    v: Literal[1] = 1

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()
