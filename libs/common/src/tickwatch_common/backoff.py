"""Capped exponential backoff with full jitter, for every loop that talks to the network."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

D = TypeVar("D", float, None)


@dataclass
class Backoff:
    initial_s: float = 0.1
    cap_s: float = 30.0
    factor: float = 2.0
    attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.initial_s * self.factor**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


def retry_after_seconds(headers: Mapping[str, str] | None, default: D) -> float | D:
    """The delay an HTTP 429/418/503 answer asks for in ``Retry-After`` (seconds), or ``default``."""
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return default
    try:
        delay_seconds = float(value)
    except ValueError:  # the HTTP-date form: not sent by the exchanges we call
        return default
    return max(0.0, delay_seconds)
