"""background: the task runs for the block, stops with it, and neither its error nor the
caller's cancellation is lost."""

from __future__ import annotations

import asyncio

import pytest
from tickwatch_common.background import background


async def test_the_task_runs_during_the_block_and_is_cancelled_after_it() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    async with background(forever()) as task:
        await started.wait()
        assert not task.done()
    assert task.cancelled()


async def test_a_task_that_finished_leaves_quietly_with_its_result() -> None:
    async def quick() -> int:
        return 7

    async with background(quick()) as task:
        await asyncio.wait({task})
    assert task.result() == 7


async def test_a_task_that_failed_raises_its_error_when_the_block_ends() -> None:
    async def broken() -> None:
        raise RuntimeError("broken loop")

    with pytest.raises(RuntimeError, match="broken loop"):
        async with background(broken()) as task:
            await asyncio.wait({task})


async def test_a_caller_cancelled_while_the_task_winds_down_stays_cancelled() -> None:
    winding_down = asyncio.Event()
    let_go = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            winding_down.set()
            await let_go.wait()  # cleanup that outlasts the caller's patience
            raise

    side: list[asyncio.Task[None]] = []

    async def caller() -> None:
        async with background(slow_to_stop()) as task:
            side.append(task)
            await asyncio.sleep(0)  # let the task start

    running = asyncio.create_task(caller())
    await winding_down.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    let_go.set()
    await asyncio.wait(side)
    assert side[0].cancelled()
