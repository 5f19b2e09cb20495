"""The SMTP connection pool against a real (test-local, aiosmtpd) SMTP server that counts."""

from __future__ import annotations

import asyncio
import uuid
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest
from tickwatch_devstack.testing import wait_until
from tickwatch_notifier.smtp_pool import PooledSMTP, SmtpPool


def message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "alerts@tickwatch.test"
    msg["To"] = "trader@example.com"
    msg["Subject"] = "move"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@tickwatch>"
    msg.set_content("BTC-USDT moved")
    return msg


def pool_for(server: Any, **kw: Any) -> SmtpPool:
    def connection() -> PooledSMTP:
        return PooledSMTP(hostname="127.0.0.1", port=server.port, start_tls=False, timeout=5)

    return SmtpPool(connection, **kw)


def ids(server: Any) -> list[bytes]:
    return [
        line for raw in server.accepted for line in raw.splitlines() if line.startswith(b"Message")
    ]


async def test_many_messages_share_a_few_connections_and_close_quits_them(
    counting_smtp: Any,
) -> None:
    server = counting_smtp()
    pool = pool_for(server, size=3)
    await asyncio.gather(*(pool.send(message()) for _ in range(30)))
    for _ in range(10):
        await pool.send(message())
    assert len(server.accepted) == 40 and len(set(ids(server))) == 40
    assert 1 <= len(server.sessions) <= 3
    assert pool.idle == len(server.sessions)
    await pool.close()
    await wait_until(lambda: server.open == 0, 10, "every connection closed")
    assert server.quits == len(server.sessions) and pool.idle == 0
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await pool.send(message())


async def test_a_connection_is_replaced_after_max_messages(counting_smtp: Any) -> None:
    server = counting_smtp()
    pool = pool_for(server, size=2, max_messages=4)
    for _ in range(10):
        await pool.send(message())
    assert len(server.sessions) == 3
    await wait_until(lambda: server.quits == 2, 10, "two QUITs")  # recycled in the background
    await pool.close()


async def test_an_idle_connection_is_closed_after_max_idle(counting_smtp: Any) -> None:
    server = counting_smtp()
    pool = pool_for(server, max_idle_s=0.2)
    await pool.send(message())
    assert server.open == 1
    await wait_until(lambda: server.open == 0 and pool.idle == 0, 10, "the idle pool closed")
    await pool.send(message())  # a new connection, not the closed one
    assert len(server.sessions) == 2 and len(server.accepted) == 2
    await pool.close()


async def test_a_server_that_closes_connections_between_messages_loses_nothing(
    counting_smtp: Any,
) -> None:
    server = counting_smtp(drop="after_each")
    pool = pool_for(server, size=2)
    for _ in range(10):
        await pool.send(message())
    assert len(server.accepted) == 10 and len(set(ids(server))) == 10
    assert len(server.sessions) == 10
    await pool.close()


@pytest.mark.parametrize("drop", ["421_on_reuse", "silently_on_reuse"])
async def test_a_reused_connection_found_dead_before_data_is_replaced_and_the_send_repeated(
    counting_smtp: Any, drop: str
) -> None:
    server = counting_smtp(drop=drop)
    pool = pool_for(server, size=1)
    for _ in range(5):
        await pool.send(message())
    # Every message after the first met a dead connection at MAIL and went on a new one.
    assert len(server.accepted) == 5 and len(set(ids(server))) == 5
    assert len(server.sessions) == 5 and server.mails == 9
    await pool.close()


async def test_a_connection_lost_during_data_is_not_repeated(counting_smtp: Any) -> None:
    """The server may already have the message: repeating it here could send it twice."""
    server = counting_smtp(drop="during_data_on_reuse")
    pool = pool_for(server, size=1)
    await pool.send(message())
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await pool.send(message())
    assert len(server.accepted) == 2 and len(server.sessions) == 1
    await pool.send(message())  # the dead connection is gone: the next send opens a new one
    assert len(server.accepted) == 3 and len(server.sessions) == 2
    await pool.close()


async def test_a_new_connection_that_fails_is_not_retried(counting_smtp: Any) -> None:
    """A new connection refused at MAIL is the server's answer, not a stale connection."""
    server = counting_smtp(drop="421_always")
    pool = pool_for(server, size=1)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
        await pool.send(message())
    assert refused.value.code == 421
    assert len(server.sessions) == 1 and server.mails == 1 and not server.accepted
    await pool.close()
