"""Honouring a cancellation that a library swallowed.

On Python 3.11, ``asyncio.wait_for`` drops a cancellation that lands in the same loop iteration
as the operation it waits for completes (cpython gh-86296, fixed in 3.12): it returns the result
instead of raising. redis-py wraps every command's send in it, so a task cancelled while it
talks to Redis can go on as if nothing happened, and a loop such a task runs never ends (this
hung the gateway's shutdown). The request is still counted by the task, though, so a loop that
must stop when cancelled calls :func:`raise_if_cancelling` once per round.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelling() -> None:
    """Raise ``CancelledError`` if the current task was asked to stop and has not."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
