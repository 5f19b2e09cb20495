"""Value types of the public API shared by several resources."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import Field

DecimalString = Annotated[
    str,
    Field(
        pattern=r"^-?[0-9]+(\.[0-9]+)?$", examples=["67012.34"], description="exact decimal string"
    ),
]
Timestamp = Annotated[
    str, Field(examples=["2026-11-23T10:00:00.000Z"], description="ISO-8601, UTC, Z suffix")
]


def decimal_str(value: Decimal) -> str:
    """The exact digits in plain notation: ``0.00000001``, never ``1E-8``."""
    return format(value, "f")


def optional_decimal_str(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")
