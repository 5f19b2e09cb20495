"""What every streaming exchange connection needs, whichever the exchange (Binance, Coinbase).

- :class:`FeedConnection`: one WebSocket and the task reading its text frames into a handler,
  replaced when it delivers no data for ``silence_timeout_s`` (the watchdog) or when the
  handler says so (a sequence gap, a refused subscription);
- :func:`open_with_backoff`: connect until it works, capped exponential backoff with jitter;
- :func:`record_loss`: a connection that ended, counted by cause and logged;
- :class:`LossBackoff`: after a lost connection, reconnect at once the first time and back
  off when losses repeat, starting over once a connection has lived a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import structlog
from tickwatch_common.backoff import Backoff
from tickwatch_common.cancellation import raise_if_cancelling

from tickwatch_ingestor.metrics import CONNECTIONS, MESSAGES_REJECTED, RECONNECTS

log = structlog.get_logger(__name__)

T = TypeVar("T")

FrameHandler = Callable[[str], Awaitable[str | None]]
"""Handles one text frame; answers ``None`` to go on, or the cause to end the connection with."""

_conn_ids = itertools.count(1)

STABLE_AFTER_S = 30.0
"""A connection that lived this long was not part of a run of failures."""


class FeedConnection:
    """One WebSocket and the task reading it."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        *,
        source: str,
        silence_timeout_s: float,
        on_frame: FrameHandler,
    ) -> None:
        self.ws = ws
        self.source = source
        self.silence_timeout_s = silence_timeout_s
        self.on_frame = on_frame
        self.id = next(_conn_ids)
        self.opened = time.monotonic()
        self.first_data = asyncio.Event()
        self.end_cause = ""
        self.task = asyncio.create_task(self._pump(), name=f"{source}-conn-{self.id}")
        CONNECTIONS.labels(source).inc()
        self.task.add_done_callback(lambda _: CONNECTIONS.labels(source).dec())

    @property
    def lived_s(self) -> float:
        return time.monotonic() - self.opened

    async def _pump(self) -> None:
        silence = self.silence_timeout_s
        loop = asyncio.get_running_loop()
        try:
            # The watchdog counts from the last *data* frame: pings are answered inside
            # receive() (autoping) and would restart a per-read timeout, so the deadline is
            # kept here, around receive().
            deadline = loop.time() + silence
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        msg = await self.ws.receive()
                except TimeoutError:
                    self.end_cause = "silence"
                    return
                if msg.type is aiohttp.WSMsgType.TEXT:
                    deadline = loop.time() + silence
                    self.first_data.set()
                    cause = await self.on_frame(msg.data)
                    if cause is not None:
                        self.end_cause = cause
                        return
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    MESSAGES_REJECTED.labels(self.source, "binary_frame").inc()
                elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING):
                    self.end_cause = "server_closed"
                    return
                elif msg.type is aiohttp.WSMsgType.CLOSED:
                    self.end_cause = "closed"
                    return
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    self.end_cause = "error"
                    return
        except asyncio.CancelledError:
            self.end_cause = self.end_cause or "replaced"
            raise
        finally:
            await self._close()

    async def _close(self) -> None:
        with contextlib.suppress(
            TimeoutError, aiohttp.ClientError, OSError, asyncio.CancelledError
        ):
            await asyncio.wait_for(asyncio.shield(self.ws.close()), 2)

    async def stop(self, cause: str) -> None:
        self.end_cause = cause
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def open_with_backoff(
    open_: Callable[[], Awaitable[T]],
    *,
    source: str,
    initial_s: float,
    cap_s: float,
    **log_fields: Any,
) -> T:
    """``open_()`` until it succeeds; each failure counted, logged and followed by a backoff."""
    backoff = Backoff(initial_s=initial_s, cap_s=cap_s)
    while True:
        raise_if_cancelling()
        try:
            return await open_()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            delay = backoff.next_delay()
            RECONNECTS.labels(source, "connect_failed").inc()
            log.warning(
                f"{source}_connect_failed",
                **log_fields,
                error=f"{type(exc).__name__}: {exc}"[:300],
                retry_in_s=round(delay, 3),
            )
            await asyncio.sleep(delay)


def record_loss(conn: FeedConnection, **log_fields: Any) -> str:
    """Count and log a connection that ended; answers its cause."""
    cause = conn.end_cause or "unknown"
    RECONNECTS.labels(conn.source, cause).inc()
    log.warning(
        f"{conn.source}_disconnected",
        **log_fields,
        conn=conn.id,
        cause=cause,
        lived_s=round(conn.lived_s, 1),
    )
    return cause


class LossBackoff:
    """How long to wait before reconnecting after a connection ended."""

    def __init__(self, initial_s: float, cap_s: float) -> None:
        self._backoff = Backoff(initial_s=initial_s, cap_s=cap_s)

    async def pause(self, lived_s: float, *, at_once: bool = True) -> None:
        """Reconnect at once after a first loss (``at_once``), backing off if it keeps
        happening; a refusal (``at_once=False``) backs off from the first time."""
        if lived_s > STABLE_AFTER_S:
            self._backoff.reset()
        if self._backoff.attempt or not at_once:
            await asyncio.sleep(self._backoff.next_delay())
        else:
            self._backoff.attempt += 1

    @property
    def attempt(self) -> int:
        return self._backoff.attempt
