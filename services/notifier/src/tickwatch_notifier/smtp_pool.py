"""A small bounded pool of SMTP connections, so e-mails reuse a logged-in connection.

- At most ``size`` connections are open at once; a send waits for one. A connection is opened
  (implicit TLS or STARTTLS, then login, as configured) only when no idle one is at hand, serves
  one send at a time, and goes back to the pool after it, most recently used first, so a quiet
  spell lets the others age out.
- Recycled (``QUIT``) after ``max_messages`` messages; closed once idle for ``max_idle_s``. The
  ``QUIT`` of a recycled connection runs in the background: the send that used it last returns
  as soon as the server accepted the message, so its outcome is recorded at once (a crash in
  between would send it twice).
- Dead connections: one the server closed while it sat idle is noticed at checkout and dropped.
  One found dead by a send (connection lost, timeout, or ``421`` closing) is dropped with every
  idle one (they are as old and likely as dead), and the send is repeated once, on a new
  connection, only when the server cannot hold the message: the failure came before ``DATA`` (at
  ``MAIL`` or ``RCPT``, the first commands on a reused connection), or came as a reply, which is
  never an acceptance. A connection lost *during* ``DATA`` is not repeated here, since the server
  may have taken the message: the send fails (transient) and the dispatcher's retry, with the
  same ``Message-ID``, decides as it always has. A fresh connection that fails is not retried
  either: that is the server's answer, not a stale connection.
- :meth:`SmtpPool.close` sends ``QUIT`` on every idle connection (and waits for the background
  ones); sends after it fail.

Hand-written because aiosmtplib, our client, has no pool, and no established PyPI package pools
its connections: the two that say they do (``msmtp``, ``simple-email-gw``) are young releases
that bring their own client, retries and circuit breakers (or a whole mail gateway), which would
duplicate the dispatcher's. Generic object pools know neither when an SMTP connection is dead
nor when a failed send may be repeated without sending twice, which is most of this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any, Literal

import aiosmtplib
import structlog
from aiosmtplib.typing import Default

from tickwatch_notifier.metrics import SMTP_CONNECTIONS, SMTP_RESENDS

log = structlog.get_logger(__name__)

CLOSING = 421  # "service not available, closing transmission channel": a reply, not an acceptance


class PooledSMTP(aiosmtplib.SMTP):
    """aiosmtplib's client that remembers how often it was used and whether DATA began.

    ``send_message`` runs ``MAIL``, ``RCPT`` and then :meth:`data`, so ``in_data`` tells a
    failure that cannot have delivered the message from one that may have.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.uses = 0
        self.messages = 0
        self.idle_since = 0.0
        self.in_data = False

    async def data(
        self,
        message: str | bytes,
        /,
        *,
        timeout: float | Literal[Default.token] | None = Default.token,
    ) -> aiosmtplib.SMTPResponse:
        self.in_data = True
        return await super().data(message, timeout=timeout)


def reply_codes(exc: BaseException) -> list[int]:
    """The server's reply codes carried by an aiosmtplib error (none for a lost connection)."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return [r.code for r in exc.recipients]
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return [exc.code]
    return []


def still_usable(conn: PooledSMTP, exc: BaseException) -> bool:
    """After a failed send: a plain refusal leaves the connection as good as before."""
    codes = reply_codes(exc)
    return bool(codes) and CLOSING not in codes and conn.is_connected


def never_delivered(conn: PooledSMTP, exc: BaseException) -> bool:
    """Whether the server certainly does not have the message, so sending again is safe."""
    codes = reply_codes(exc)
    if codes:
        return CLOSING in codes  # a reply (no 250) means not accepted; 421 means a dead link
    return isinstance(exc, OSError) and not conn.in_data  # lost or timed out before DATA


class SmtpPool:
    """Up to ``size`` reusable connections, each made by ``factory`` and then ``connect()``-ed."""

    def __init__(
        self,
        factory: Callable[[], PooledSMTP],
        *,
        size: int = 10,
        max_messages: int = 100,
        max_idle_s: float = 30.0,
        quit_timeout_s: float = 5.0,
    ) -> None:
        if size < 1 or max_messages < 1:
            raise ValueError("an SMTP pool needs at least one connection and one message each")
        self.factory = factory
        self.size = size
        self.max_messages = max_messages
        self.max_idle_s = max_idle_s
        self.quit_timeout_s = quit_timeout_s
        self._slots = asyncio.Semaphore(size)
        self._idle: list[PooledSMTP] = []  # most recently used last
        self._reaper: asyncio.TimerHandle | None = None
        self._retiring: set[asyncio.Task[None]] = set()  # background QUITs
        self._closed = False

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def send(self, message: EmailMessage) -> None:
        """Send on a pooled connection; raises aiosmtplib's errors as ``send_message`` does."""
        async with self._slots:
            conn = await self._checkout()
            try:
                await self._send_on(conn, message)
            except Exception as exc:
                if conn.uses == 1 or not never_delivered(conn, exc):
                    raise
                log.info("smtp_connection_dead", error=f"{type(exc).__name__}: {exc}"[:200])
                SMTP_RESENDS.inc()
                self._drop_idle()
                await self._send_on(await self._open(), message)

    async def close(self) -> None:
        """``QUIT`` every idle connection; connections still sending are closed on return."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(conn) for conn in idle), *self._retiring)

    # ------------------------------------------------------------------ internals

    async def _send_on(self, conn: PooledSMTP, message: EmailMessage) -> None:
        conn.uses += 1
        conn.in_data = False
        try:
            await conn.send_message(message)
        except Exception as exc:
            if still_usable(conn, exc):
                self._release(conn)
            else:
                conn.close()
            raise
        except BaseException:  # cancelled mid-conversation: the connection's state is unknown
            conn.close()
            raise
        conn.messages += 1
        self._release(conn)

    async def _checkout(self) -> PooledSMTP:
        self._reap()
        while self._idle:
            conn = self._idle.pop()
            if conn.is_connected:
                return conn
            conn.close()  # the server closed it while it was idle
        return await self._open()

    async def _open(self) -> PooledSMTP:
        if self._closed:
            raise aiosmtplib.SMTPServerDisconnected("the SMTP pool is closed")
        conn = self.factory()
        try:
            await conn.connect()
        except BaseException:
            conn.close()
            raise
        SMTP_CONNECTIONS.inc()
        return conn

    def _release(self, conn: PooledSMTP) -> None:
        if self._closed or conn.messages >= self.max_messages or not conn.is_connected:
            retiring = asyncio.create_task(self._quit(conn))
            self._retiring.add(retiring)
            retiring.add_done_callback(self._retiring.discard)
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().call_later(self.max_idle_s, self._reap)

    def _reap(self) -> None:
        """Close connections idle for ``max_idle_s``; come back when the next one will be."""
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        cutoff = time.monotonic() - self.max_idle_s
        expired = [c for c in self._idle if c.idle_since <= cutoff]
        for conn in expired:
            self._idle.remove(conn)
            conn.close()
        if self._idle:
            wait = self._idle[0].idle_since - cutoff
            self._reaper = asyncio.get_running_loop().call_later(wait, self._reap)

    def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def _quit(self, conn: PooledSMTP) -> None:
        if conn.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await conn.quit(timeout=self.quit_timeout_s)
        conn.close()
