"""Log lines carry the service and, while a request is handled, its id."""

from __future__ import annotations

import json

import pytest
import structlog
from tickwatch_common.logging import CURRENT_REQUEST_ID, configure_logging


def test_a_line_logged_while_a_request_is_handled_carries_its_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("test-service")
    log = structlog.get_logger("t")
    token = CURRENT_REQUEST_ID.set("req-42")
    try:
        log.info("inside")
    finally:
        CURRENT_REQUEST_ID.reset(token)
    log.info("outside")
    inside, outside = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert inside["request_id"] == "req-42" and inside["service"] == "test-service"
    assert "request_id" not in outside and outside["event"] == "outside"
