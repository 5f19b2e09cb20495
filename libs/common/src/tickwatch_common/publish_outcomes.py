"""How publishing goes, per topic: the latest outcome and the sends still unanswered.

A producer whose sends all fail (or, with the idempotent producer, are retried forever and never
answered) still answers metadata requests, so a broker round trip alone says "ready" while
nothing is published. This record is what the ``publishing`` readiness check reads: a topic
whose latest outcome is a failure, or with a send unanswered for longer than ``overdue_s``,
fails it until the next success. No I/O; the clock is a parameter.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    ok: bool
    at: float
    error: str = ""


class PublishOutcomes:
    def __init__(
        self, *, overdue_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.overdue_s = overdue_s
        self.clock = clock
        self.latest: dict[str, Outcome] = {}
        self._pending: dict[str, dict[int, float]] = {}
        self._tokens = itertools.count()

    def sent(self, topic: str) -> int:
        """A send handed to the producer; pass the token to :meth:`answered`."""
        token = next(self._tokens)
        self._pending.setdefault(topic, {})[token] = self.clock()
        return token

    def answered(self, topic: str, token: int | None, error: BaseException | None) -> None:
        """The broker's answer to a send (``error=None``: acknowledged)."""
        if token is not None:
            self._pending.get(topic, {}).pop(token, None)
        self.record(topic, error)

    def dropped(self, topic: str, token: int) -> None:
        """A send that will never be answered (its producer was abandoned): no outcome."""
        self._pending.get(topic, {}).pop(token, None)

    def record(self, topic: str, error: BaseException | None) -> None:
        """An outcome without a pending token (a send refused before it was queued)."""
        text = "" if error is None else f"{type(error).__name__}: {error}".rstrip(": ")
        self.latest[topic] = Outcome(error is None, self.clock(), text)

    def failing(self) -> dict[str, str]:
        """Topic -> why, for every topic that publishing fails on now."""
        now = self.clock()
        bad: dict[str, str] = {}
        for topic, outcome in self.latest.items():
            if not outcome.ok:
                ago = now - outcome.at
                bad[topic] = f"{outcome.error or 'failed'} ({ago:.0f} s ago)"
        for topic, pending in self._pending.items():
            if pending and topic not in bad:
                oldest = now - min(pending.values())
                if oldest > self.overdue_s:
                    bad[topic] = f"{len(pending)} send(s) unanswered for {oldest:.0f} s"
        return bad
