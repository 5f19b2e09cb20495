"""Value types of the public API shared by several resources."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, WithJsonSchema
from tickwatch_common.text import CleanText

DecimalString = Annotated[
    str,
    CleanText(pattern=r"-?[0-9]+(\.[0-9]+)?"),
    Field(examples=["67012.34"], description="exact decimal string"),
]
PositiveDecimal = Annotated[
    str,
    CleanText(pattern=r"[0-9]{1,20}(\.[0-9]{1,18})?"),
    Field(examples=["70000"], description="a positive exact decimal string"),
]
"""An exact decimal a client sends: ASCII digits only, at most 20 before and 18 after the point."""
Timestamp = Annotated[
    str, Field(examples=["2026-11-23T10:00:00.000Z"], description="ISO-8601, UTC, Z suffix")
]

DATE_TIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})?$(?!\n)"
)
_DATE_TIME = re.compile(DATE_TIME_PATTERN)


def _date_time_text(value: Any) -> Any:
    # pydantic would also read "0.5" or "1700000000" as seconds since the epoch; the published
    # schema says a date-time, so a number is refused rather than guessed at.
    if isinstance(value, str) and _DATE_TIME.fullmatch(value) is None:
        raise ValueError("must be an ISO-8601 date-time such as 2026-11-23T10:00:00Z")
    return value


QueryDateTime = Annotated[
    datetime,
    BeforeValidator(_date_time_text),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": DATE_TIME_PATTERN,
            "description": "ISO-8601 date and time; UTC when no offset",
        }
    ),
]
"""A date-time in a query string: the date and the time, the offset optional (then UTC)."""


def decimal_str(value: Decimal) -> str:
    """The exact digits in plain notation: ``0.00000001``, never ``1E-8``."""
    return format(value, "f")


def optional_decimal_str(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")
