"""Every v1 event, defined once. Topic bindings live in :mod:`tickwatch_common.topics`."""

from tickwatch_common.events.alerts import AlertState, Trigger, TriggerChannel
from tickwatch_common.events.base import Event
from tickwatch_common.events.market import Candle, Instrument, InstrumentStatus, Tick
from tickwatch_common.events.notifications import NotificationDeadLetter, NotificationStatus
from tickwatch_common.events.portfolio import HoldingValue, Valuation

__all__ = [
    "AlertState",
    "Candle",
    "Event",
    "HoldingValue",
    "Instrument",
    "InstrumentStatus",
    "NotificationDeadLetter",
    "NotificationStatus",
    "Tick",
    "Trigger",
    "TriggerChannel",
    "Valuation",
]
