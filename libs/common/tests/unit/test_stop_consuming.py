"""stop_consuming: a graceful stop first, a cancel past the grace, and no lost cancellation."""

from __future__ import annotations

import asyncio

import pytest
from tickwatch_common.kafka import stop_consuming


async def test_a_task_that_honours_the_stop_finishes_its_batch() -> None:
    stop = asyncio.Event()
    finished: list[str] = []

    async def consume() -> None:
        await stop.wait()
        await asyncio.sleep(0)  # the batch in hand
        finished.append("batch")

    task = asyncio.create_task(consume())
    await stop_consuming(task, stop, grace_s=5)
    assert finished == ["batch"] and not task.cancelled()


async def test_a_task_that_ignores_the_stop_is_cancelled_after_the_grace() -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(asyncio.Event().wait())
    await stop_consuming(task, stop, grace_s=0.05)
    assert task.cancelled()


async def test_the_tasks_failure_is_raised() -> None:
    stop = asyncio.Event()

    async def consume() -> None:
        await stop.wait()
        raise RuntimeError("broken handler")

    task = asyncio.create_task(consume())
    with pytest.raises(RuntimeError, match="broken handler"):
        await stop_consuming(task, stop, grace_s=5)


async def test_a_cancelled_caller_stays_cancelled_and_the_task_is_stopped() -> None:
    stop = asyncio.Event()
    consumer = asyncio.create_task(asyncio.Event().wait())  # ignores the stop
    caller = asyncio.create_task(stop_consuming(consumer, stop, grace_s=60))
    await stop.wait()  # set in the caller's step that then waits out the grace
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert consumer.cancelled()
