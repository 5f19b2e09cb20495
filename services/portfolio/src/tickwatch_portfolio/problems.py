"""Answers as plain data: a status and a JSON body, errors as RFC 9457 problems.

Plain data rather than aiohttp responses so an operation's answer can be stored under its
Idempotency-Key and replayed byte for byte; ``api/`` turns them into responses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from http import HTTPStatus
from typing import Any

PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Mapping[str, Any]

    @property
    def is_problem(self) -> bool:
        return self.status >= 400


def problem(status: int, detail: str, **extensions: Any) -> Answer:
    return Answer(
        status,
        {
            "type": "about:blank",
            "title": HTTPStatus(status).phrase,
            "status": status,
            "detail": detail,
            **extensions,
        },
    )


def invalid(field: str, detail: str) -> Answer:
    """422 naming the request field at fault."""
    return problem(422, detail, errors=[{"field": field, "message": detail}], field=field)


def dec(value: Decimal) -> str:
    """A decimal as the API writes it: plain digits, never an exponent (``1E+4``), and no
    trailing zeros after the point: the ledger keeps a partial sell's cost share to 20 places,
    and ``137.29`` is the same value as ``137.29000000000000000000``, easier read."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text
