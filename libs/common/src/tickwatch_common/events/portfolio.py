"""Portfolio valuations."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from tickwatch_common.events.base import DecimalStr, EpochMs, Event, Symbol


class HoldingValue(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    symbol: Symbol
    quantity: DecimalStr
    price: DecimalStr
    value: DecimalStr
    unrealized_pnl: DecimalStr


class Valuation(Event):
    user_id: str
    total_value: DecimalStr
    cash: DecimalStr
    holdings: list[HoldingValue]
    ts: EpochMs
