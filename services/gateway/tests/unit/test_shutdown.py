"""Bounded shutdown with real tasks: one that swallows a cancellation, one that never ends."""

from __future__ import annotations

import asyncio
import time

from structlog.testing import capture_logs
from tickwatch_gateway.runtime.shutdown import bounded, stop_tasks, stuck_at


async def ignores_cancellation_once(started: asyncio.Event) -> None:
    started.set()
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        await asyncio.sleep(3600)  # e.g. a client's close waiting on a server that never answers


async def ignores_every_cancellation(started: asyncio.Event, release: asyncio.Event) -> None:
    started.set()
    while True:
        try:
            await release.wait()
            return
        except asyncio.CancelledError:
            continue


async def test_stop_tasks_is_bounded_and_names_what_overran() -> None:
    events = [asyncio.Event() for _ in range(3)]
    release = asyncio.Event()
    tasks = [
        asyncio.create_task(asyncio.sleep(3600), name="polite"),
        asyncio.create_task(ignores_cancellation_once(events[0]), name="stubborn"),
        asyncio.create_task(ignores_every_cancellation(events[1], release), name="deaf"),
    ]
    await asyncio.gather(events[0].wait(), events[1].wait())
    started = time.monotonic()
    with capture_logs() as logs:
        overran = await stop_tasks(tasks, timeout_s=0.3)
    assert time.monotonic() - started < 0.3 + 1.0 + 0.5
    assert overran == ["deaf", "stubborn"]
    assert tasks[0].cancelled() and tasks[1].cancelled()  # the second cancellation got it
    assert not tasks[2].done()  # left behind, and said so
    events_logged = [(e["event"], e["what"]) for e in logs]
    assert ("shutdown_overran", "stubborn") in events_logged
    assert ("shutdown_abandoned", "deaf") in events_logged
    overran_log = next(e for e in logs if e["what"] == "stubborn")
    assert any("ignores_cancellation_once" in frame for frame in overran_log["stuck_at"])
    release.set()
    await tasks[2]


async def test_bounded_cancels_a_stop_that_overruns_and_reports_failures() -> None:
    started = asyncio.Event()

    async def hangs() -> None:
        started.set()
        await asyncio.Event().wait()

    async def fails() -> None:
        raise RuntimeError("connection reset")

    with capture_logs() as logs:
        assert await bounded("quick", lambda: asyncio.sleep(0), timeout_s=1) is True
        began = time.monotonic()
        assert await bounded("broker", hangs, timeout_s=0.2) is False
        assert time.monotonic() - began < 1
        assert await bounded("pool", fails, timeout_s=1) is False
    assert [(e["event"], e["what"]) for e in logs] == [
        ("shutdown_overran", "broker"),
        ("shutdown_step_failed", "pool"),
    ]


async def test_stuck_at_follows_awaited_tasks() -> None:
    async def inner() -> None:
        await asyncio.sleep(3600)

    async def outer(task: asyncio.Task[None]) -> None:
        await task

    inner_task = asyncio.create_task(inner(), name="inner")
    outer_task = asyncio.create_task(outer(inner_task), name="outer")
    await asyncio.sleep(0.01)
    chain = stuck_at(outer_task)
    assert chain[0].startswith("test_stuck_at_follows_awaited_tasks.<locals>.outer")
    assert "awaiting task inner" in chain
    assert any(frame.startswith("sleep") for frame in chain)
    await stop_tasks([outer_task, inner_task], timeout_s=1)
