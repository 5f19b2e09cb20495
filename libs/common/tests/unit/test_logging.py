"""Every line carries the service's name and, while a request is handled, its id."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import sys

import pytest
import structlog
from tickwatch_common.logging import CURRENT_REQUEST_ID, add_request_id, configure_logging
from tickwatch_common.runtime import run

# configure_logging() points structlog and the stdlib root logger at the sys.stdout of the
# moment: a test that calls it gives it a stream of its own and puts both back afterwards.


def test_a_line_logged_while_a_request_is_handled_carries_its_id() -> None:
    token = CURRENT_REQUEST_ID.set("req-42")
    try:
        assert add_request_id(None, "info", {"event": "inside"})["request_id"] == "req-42"
    finally:
        CURRENT_REQUEST_ID.reset(token)
    assert "request_id" not in add_request_id(None, "info", {"event": "outside"})


def test_an_id_bound_explicitly_wins() -> None:
    token = CURRENT_REQUEST_ID.set("req-42")
    try:
        assert add_request_id(None, "info", {"request_id": "given"})["request_id"] == "given"
    finally:
        CURRENT_REQUEST_ID.reset(token)


def test_every_line_carries_the_service_even_outside_main_and_from_the_stdlib(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The runtime's shutdown lines are logged outside ``main()``'s task, where a ContextVar it
    bound is not seen; a stdlib library's record takes the other path through the formatter."""
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    async def main() -> None:
        configure_logging("alert-engine")
        structlog.get_logger("inside").info("started")
        logging.getLogger("aiokafka.consumer").warning("rebalancing")
        await asyncio.to_thread(logging.getLogger("a.thread").error, "from a thread")
        os.kill(os.getpid(), signal.SIGTERM)  # the runtime logs shutdown_requested, stopped
        await asyncio.Event().wait()

    try:
        run(main)
        logging.getLogger("after").warning("after the loop")
    finally:
        structlog.reset_defaults()
        root.handlers[:], root.level = handlers, level
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == [
        "started",
        "rebalancing",
        "from a thread",
        "shutdown_requested",
        "stopped",
        "after the loop",
    ]
    assert all(line["service"] == "alert-engine" for line in lines)
