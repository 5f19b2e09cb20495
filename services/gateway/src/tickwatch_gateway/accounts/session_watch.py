"""Long-lived connections end when their login ends.

A WebSocket authenticated with an access token outlives any single request, so the checks an
HTTP request gets once (signature, expiry, revocation) must keep being made for it. Each such
socket is registered here with its login id and its token's expiry; one task per replica then,
every ``WS_SESSION_CHECK_S`` and at once after a logout on this replica, asks whether each
distinct login is still live (one revocation check per login, not per socket) and ends the
sockets of a revoked login or an expired token. A logout on another replica reaches this one
within one check interval; when whether a login is revoked cannot be told, its sockets stay
until the next check (the same fail-closed check then runs again).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from prometheus_client import Counter

from tickwatch_gateway.accounts.revocation import LoginRevocations, RevocationUnknown

log = structlog.get_logger(__name__)

SESSIONS_ENDED = Counter(
    "tickwatch_gateway_ws_sessions_ended_total",
    "Authenticated WebSockets ended by their login",
    ["reason"],
)

End = Callable[[str], Awaitable[None]]


@dataclass(eq=False)
class Watched:
    session_id: str | None
    expires_at_s: int
    end: End
    ended: bool = field(default=False)


def due(watched: list[Watched], revoked: set[str], now_s: float) -> list[tuple[Watched, str]]:
    """Which sockets must end now, and why (pure: the rule the watch applies)."""
    out = []
    for w in watched:
        if w.ended:
            continue
        if w.session_id is not None and w.session_id in revoked:
            out.append((w, "login revoked"))
        elif w.expires_at_s <= now_s:
            out.append((w, "access token expired"))
    return out


class SessionWatch:
    def __init__(self, revocations: LoginRevocations, interval_s: float) -> None:
        self.revocations = revocations
        self.interval_s = interval_s
        self._watched: set[Watched] = set()
        self._poke = asyncio.Event()

    def watch(self, session_id: str | None, expires_at_s: int, end: End) -> Watched:
        w = Watched(session_id, expires_at_s, end)
        self._watched.add(w)
        return w

    def unwatch(self, w: Watched) -> None:
        self._watched.discard(w)

    def poke(self) -> None:
        """Check now (a login was revoked here)."""
        self._poke.set()

    async def check(self) -> int:
        """One round; the number of sockets ended."""
        watched = list(self._watched)
        revoked: set[str] = set()
        for sid in {w.session_id for w in watched if w.session_id is not None}:
            try:
                if await self.revocations.is_revoked(sid):
                    revoked.add(sid)
            except RevocationUnknown:
                continue
        ending = due(watched, revoked, time.time())
        for w, reason in ending:
            w.ended = True
            self._watched.discard(w)
            SESSIONS_ENDED.labels(reason).inc()
            with contextlib.suppress(Exception):
                await w.end(reason)
        return len(ending)

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.interval_s)
            self._poke.clear()
            try:
                await self.check()
            except Exception:
                log.exception("session_watch_failed")
