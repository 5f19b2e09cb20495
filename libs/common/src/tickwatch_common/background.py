"""A service's side task that lives as long as a block: started on the way in, cancelled on the
way out.

Every service has a few (a flush loop, a snapshot timer, a fill queue's worker); each used to
spell out create, cancel and suppress itself. One copy also gets two edge cases right once:
a task that already failed raises its error on the way out rather than passing unnoticed, and a
cancellation of the block's own task while it waits for the side task goes on to that task
(``asyncio.wait`` never swallows it, where ``suppress(CancelledError)`` around ``await task``
would).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

T = TypeVar("T")


@asynccontextmanager
async def background(coro: Coroutine[Any, Any, T]) -> AsyncIterator[asyncio.Task[T]]:
    """``coro`` running as a task for the length of the block, which gets the task; cancelled
    (and waited for) when the block ends. Its own error, if it failed first, is raised then."""
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled():
            task.result()
