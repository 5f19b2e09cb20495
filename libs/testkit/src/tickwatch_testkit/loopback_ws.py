"""What the protocol fakes' WebSocket servers share: their connections, background tasks, and
forced disconnects."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Generic, Protocol, TypeVar

from aiohttp import web


class ServerConn(Protocol):
    ws: web.WebSocketResponse
    closed: bool


C = TypeVar("C", bound=ServerConn)


class LoopbackConnections(Generic[C]):
    def __init__(self) -> None:
        self.conns: list[C] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def open_conns(self) -> list[C]:
        return [c for c in self.conns if not c.closed]

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _cancel_tasks(self) -> None:
        for t in list(self._tasks):
            t.cancel()

    async def _close(self, conn: C) -> None:
        conn.closed = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.ws.close(), 2)

    async def drop_all(self) -> None:
        """Forced disconnect of every open connection."""
        await asyncio.gather(*(self._close(c) for c in self.open_conns))
