"""Bounded shutdown: every stop in the gateway's cleanup has a deadline.

The same cleanup runs when a test closes the app and when the process gets SIGTERM, and a
broker that stops answering must not be able to hold either for ever. So each stop here gets
``timeout_s``; one that overruns is logged as ``shutdown_overran`` with its name and the chain of
awaits it was stuck in, then forced: a task is cancelled once more (a library may have
swallowed the first cancellation, see :mod:`tickwatch_common.cancellation`: that, in the
outbox relay and the rate-limit flush loop, was the rare hang of this cleanup) and left behind
after a short grace; a resource's close is cancelled (what asyncpg, for one, answers by
terminating its connections). The cleanup then carries on, so it ends within a few seconds
whatever a server or a library does.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import structlog

log = structlog.get_logger(__name__)
T = TypeVar("T")

GRACE_S = 1.0  # after the second cancellation, before a task is left behind


async def stop_tasks(tasks: Sequence[asyncio.Task[Any]], timeout_s: float) -> list[str]:
    """Cancel ``tasks`` and wait for them together, at most ``timeout_s``; returns the names of
    those that overran (each is logged, cancelled again, and abandoned if still running)."""
    for task in tasks:
        task.cancel()
    pending: set[asyncio.Task[Any]] = set()
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    overran = sorted(task.get_name() for task in pending)
    for task in pending:
        log.error(
            "shutdown_overran", what=task.get_name(), timeout_s=timeout_s, stuck_at=stuck_at(task)
        )
        task.cancel()
    if pending:
        _, still = await asyncio.wait(pending, timeout=GRACE_S)
        for task in still:
            log.error("shutdown_abandoned", what=task.get_name(), stuck_at=stuck_at(task))
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning(
                "task_failed_before_shutdown", what=task.get_name(), error=repr(task.exception())
            )
    return overran


async def bounded(what: str, stop: Callable[[], Awaitable[object]], timeout_s: float) -> bool:
    """Run ``stop()`` for at most ``timeout_s``; past it, log and cancel it. False if it overran
    or failed (the failure is logged: a cleanup step never stops the ones after it)."""

    async def run() -> object:
        return await stop()

    stopping = asyncio.create_task(run(), name=f"stop {what}")
    try:
        done, _ = await asyncio.wait({stopping}, timeout=timeout_s)
    except asyncio.CancelledError:
        stopping.cancel()
        raise
    if not done:
        log.error("shutdown_overran", what=what, timeout_s=timeout_s, stuck_at=stuck_at(stopping))
        stopping.cancel()
        await asyncio.wait({stopping}, timeout=GRACE_S)
        return False
    if stopping.exception() is not None:
        log.warning("shutdown_step_failed", what=what, error=repr(stopping.exception()))
        return False
    return True


@asynccontextmanager
async def bounded_exit(
    what: str, resource: AbstractAsyncContextManager[T], timeout_s: float
) -> AsyncIterator[T]:
    """Enter ``resource`` as it is; leave it through :func:`bounded`."""
    value = await resource.__aenter__()
    try:
        yield value
    finally:
        await bounded(what, lambda: resource.__aexit__(None, None, None), timeout_s)


def stuck_at(task: asyncio.Task[Any], depth: int = 24) -> list[str]:
    """Where a task is waiting, outermost first: the coroutines (and async generators, such as
    a context manager's) it is suspended in, then into the task it awaits, and so on."""
    chain: list[str] = []
    current: asyncio.Task[Any] | None = task
    while current is not None and len(chain) < depth:
        awaited: Any = current.get_coro()
        while awaited is not None and len(chain) < depth:
            frame, awaited = _step(awaited)
            if frame is None:
                break
            where = f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno}"
            chain.append(f"{frame.f_code.co_qualname} ({where})")
            if awaited is not None and not _steppable(awaited):
                # An async generator being resumed (``athrow``/``asend`` hide it): the
                # context manager in ``self`` of the frame holds it.
                held = getattr(frame.f_locals.get("self"), "gen", None)
                awaited = held if isinstance(held, types.AsyncGeneratorType) else None
        # The future the task is blocked on (CPython keeps it there; None when not blocked).
        waiter = getattr(current, "_fut_waiter", None)
        current = waiter if isinstance(waiter, asyncio.Task) else None
        if current is not None:
            chain.append(f"awaiting task {current.get_name()}")
    return chain


def _steppable(awaited: object) -> bool:
    return isinstance(awaited, types.CoroutineType | types.GeneratorType | types.AsyncGeneratorType)


def _step(awaited: object) -> tuple[types.FrameType | None, object]:
    """The frame of a coroutine, generator or async generator, and what it awaits."""
    if isinstance(awaited, types.CoroutineType):
        return awaited.cr_frame, awaited.cr_await
    if isinstance(awaited, types.GeneratorType):
        return awaited.gi_frame, awaited.gi_yieldfrom
    if isinstance(awaited, types.AsyncGeneratorType):
        return awaited.ag_frame, awaited.ag_await
    return None, None
