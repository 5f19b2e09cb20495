"""Which ``Accept`` headers get the trades as CSV."""

from __future__ import annotations

import pytest
from tickwatch_portfolio.api.routes import wants_csv


@pytest.mark.parametrize(
    ("accept", "csv"),
    [
        ("text/csv", True),
        ("Text/CSV; charset=utf-8", True),
        ("text/csv, application/json", True),
        ("application/json, text/csv", False),
        ("application/json;q=0.5, text/csv", True),
        ("text/csv;q=0, application/json", False),
        ("text/csv;q=0", False),
        ("*/*", False),
        ("", False),
        ("application/json", False),
    ],
)
def test_accept(accept: str, csv: bool) -> None:
    assert wants_csv(accept) is csv
