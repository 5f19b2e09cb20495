"""While a request is handled, log lines carry its id."""

from __future__ import annotations

from tickwatch_common.logging import CURRENT_REQUEST_ID, add_request_id

# configure_logging() is not called here: it points structlog and the stdlib root logger at the
# sys.stdout of the moment, which under pytest's capture is a stream closed after the test.


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
