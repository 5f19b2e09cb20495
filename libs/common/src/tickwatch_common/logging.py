"""structlog JSON logs carrying the service name and, where there is one, a correlation id.

The service name is added by a processor, not bound in a ContextVar: a ContextVar bound inside
``main()`` is not seen by code outside that task (the runtime's signal handler and its last
``stopped`` line), nor by stdlib records from threads, so those lines went out without it.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

import structlog
from structlog.typing import EventDict, WrappedLogger

# The id of the request being handled, for HTTP services: set once per request, read only when
# a line is logged (structlog's bind/reset per request costs several times more).
CURRENT_REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)


def add_request_id(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    rid = CURRENT_REQUEST_ID.get()
    if rid is not None:
        event_dict.setdefault("request_id", rid)
    return event_dict


def service_adder(service: str) -> structlog.types.Processor:
    """A processor giving every line this service's name (a name bound on a line wins)."""

    def add_service(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return add_service


def configure_logging(service: str, level: str = "INFO") -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        service_adder(service),
        add_request_id,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    # Libraries that log through the standard library (aiokafka, aiohttp) go out as JSON too.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO))
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
