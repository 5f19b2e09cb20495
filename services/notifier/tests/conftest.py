"""A test-local SMTP server (aiosmtpd) that counts connections and can drop them on purpose, and
a factory of e-mail triggers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from typing import Any, Literal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from tickwatch_common.events import Trigger, TriggerChannel

Drop = Literal[
    "never", "after_each", "421_always", "421_on_reuse", "silently_on_reuse", "during_data_on_reuse"
]


class CountingSMTP:
    """Counts the connections that greeted it (EHLO), those closed since, and the messages.

    ``drop`` makes it behave like a server that ends connections: ``after_each`` closes every
    connection once it has accepted a message; ``421_always`` answers every ``MAIL`` with
    ``421``; the ``*_on_reuse`` modes act on the second message of a connection, at ``MAIL``
    with a ``421`` reply or by closing without a word, or after taking the message in (so the
    server has it) but before replying.
    """

    def __init__(self, drop: Drop = "never") -> None:
        self.drop = drop
        self.port = 0
        self.sessions: list[Session] = []  # in the order they greeted
        self.closed = 0
        self.quits = 0
        self.mails = 0  # MAIL commands seen
        self.accepted: list[bytes] = []
        self._delivered: dict[int, int] = {}  # id(session) -> messages accepted on it

    @property
    def open(self) -> int:
        return len(self.sessions) - self.closed

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: Any
    ) -> Any:
        session.host_name = hostname
        self.sessions.append(session)
        self._delivered[id(session)] = 0
        return responses

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.quits += 1
        return "221 Bye"

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.mails += 1
        if self.drop == "421_always":
            close_soon(server)
            return "421 4.3.2 Service not available"
        if self._delivered.get(id(session)):
            if self.drop == "421_on_reuse":
                close_soon(server)
                return "421 4.4.2 Closing idle connection"
            if self.drop == "silently_on_reuse":
                assert server.transport is not None
                server.transport.close()
                return "250 OK"  # never reaches the client
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.accepted.append(envelope.original_content or b"")
        self._delivered[id(session)] = self._delivered.get(id(session), 0) + 1
        if self.drop == "during_data_on_reuse" and self._delivered[id(session)] > 1:
            assert server.transport is not None
            server.transport.close()  # the message is taken, the reply never sent
        elif self.drop == "after_each":
            close_soon(server)
        return "250 Message accepted"


def close_soon(server: SMTP) -> None:
    """Close the connection right after the reply being written now."""
    transport = server.transport
    assert transport is not None
    asyncio.get_running_loop().call_soon(transport.close)


class _Controller(Controller):  # type: ignore[misc]
    def factory(self) -> SMTP:
        counting: CountingSMTP = self.handler
        smtp = _CountingServer(counting, **self.SMTP_kwargs)
        return smtp


class _CountingServer(SMTP):  # type: ignore[misc]
    def connection_lost(self, error: Exception | None) -> None:
        counting: CountingSMTP = self.event_handler
        if any(s is self.session for s in counting.sessions):
            counting.closed += 1
        super().connection_lost(error)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def counting_smtp() -> Iterator[Callable[..., CountingSMTP]]:
    """``counting_smtp(drop=...)`` starts a :class:`CountingSMTP` on a free port."""
    controllers: list[Controller] = []

    def start(drop: Drop = "never") -> CountingSMTP:
        server = CountingSMTP(drop)
        server.port = free_port()
        controller = _Controller(server, hostname="127.0.0.1", port=server.port)
        controller.start()
        controllers.append(controller)
        return server

    yield start
    for controller in controllers:
        controller.stop()


def _email_trigger(event_id: str, to: str) -> Trigger:
    return Trigger.model_validate(
        {
            "event_id": event_id,
            "alert_id": f"a-{event_id}",
            "user_id": "u-1",
            "sequence": 1,
            "symbol": "BTC-USDT",
            "condition": "above",
            "threshold": "70000",
            "price": "70001.5",
            "ts_event": 1_795_000_000_000,
            "triggered_at": 1_795_000_000_100,
            "channels": [TriggerChannel(type="email", to=to)],
        }
    )


@pytest.fixture
def email_trigger() -> Callable[[str, str], Trigger]:
    """``email_trigger(event_id, to)``: a BTC-USDT ``above`` trigger with one e-mail channel."""
    return _email_trigger
