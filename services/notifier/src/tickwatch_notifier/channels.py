"""The ways out: SMTP, the SendGrid v3 HTTP API and signed webhooks.

Each ``send`` answers an :class:`Outcome` instead of raising: ``sent``, ``transient`` (worth
retrying: SMTP 4xx, timeouts, connection errors, HTTP 408/429/5xx) or ``permanent`` (SMTP 5xx,
other HTTP 4xx, a channel without an address).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import aiohttp
import aiosmtplib
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from tickwatch_common.events import Trigger, TriggerChannel
from tickwatch_common.ssrf import (
    BlockedAddress,
    is_localhost_name,
    is_public_address,
    parse_host_address,
)

from tickwatch_notifier.messages import Templates, email_message, message_id, webhook_body
from tickwatch_notifier.smtp_pool import PooledSMTP, SmtpPool

SIGNATURE_HEADER = "X-Tickwatch-Signature"
TIMESTAMP_HEADER = "X-Tickwatch-Timestamp"
EVENT_HEADER = "X-Tickwatch-Event-Id"


@dataclass(frozen=True)
class Outcome:
    result: Literal["sent", "transient", "permanent"]
    detail: str = ""


SENT = Outcome("sent")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of "{timestamp}.{body}">`` under the alert's secret."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver does (also used by our tests)."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def http_outcome(status: int, text: str) -> Outcome:
    if 200 <= status < 300:
        return Outcome("sent", f"HTTP {status}")
    detail = f"HTTP {status}: {text[:200]}"
    if status in (408, 425, 429) or status >= 500:
        return Outcome("transient", detail)
    return Outcome("permanent", detail)


class Channel(Protocol):
    def destination(self, channel: TriggerChannel) -> str: ...

    async def send(self, trigger: Trigger, channel: TriggerChannel) -> Outcome: ...


class SmtpEmail:
    """Email over SMTP (aiosmtplib): TLS, STARTTLS and login as configured, on pooled connections
    (:mod:`tickwatch_notifier.smtp_pool`); :meth:`close` closes the pool."""

    def __init__(
        self,
        templates: Templates,
        *,
        mail_from: str,
        host: str,
        port: int,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        tls: bool = False,
        timeout_s: float = 10.0,
        pool_size: int = 10,
        pool_max_messages: int = 100,
        pool_idle_s: float = 30.0,
    ) -> None:
        self.templates = templates
        self.mail_from = mail_from
        self.host, self.port = host, port

        def connection() -> PooledSMTP:
            return PooledSMTP(
                hostname=host,
                port=port,
                username=username or None,
                password=password or None,
                use_tls=tls,
                start_tls=starttls,
                timeout=timeout_s,
            )

        self.pool = SmtpPool(
            connection, size=pool_size, max_messages=pool_max_messages, max_idle_s=pool_idle_s
        )

    def destination(self, channel: TriggerChannel) -> str:
        return f"smtp:{self.host}:{self.port}"

    async def close(self) -> None:
        await self.pool.close()

    async def send(self, trigger: Trigger, channel: TriggerChannel) -> Outcome:
        if not channel.to:
            return Outcome("permanent", "email channel without an address")
        message = email_message(
            self.templates.render(trigger), mail_from=self.mail_from, to=channel.to, trigger=trigger
        )
        try:
            await self.pool.send(message)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
            transient = all(400 <= c < 500 for c in codes)
            return Outcome("transient" if transient else "permanent", f"SMTP {detail}"[:300])
        except aiosmtplib.SMTPResponseException as exc:
            kind: Literal["transient", "permanent"] = (
                "transient" if 400 <= exc.code < 500 else "permanent"
            )
            return Outcome(kind, f"SMTP {exc.code} {exc.message}"[:300])
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return Outcome("transient", f"SMTP {type(exc).__name__}: {exc}"[:300])
        return Outcome("sent", f"SMTP accepted by {self.host}:{self.port}")


class SendGridEmail:
    """Email through the SendGrid v3 ``/mail/send`` API (used when SENDGRID_API_KEY is set)."""

    def __init__(
        self,
        templates: Templates,
        http: aiohttp.ClientSession,
        *,
        api_key: str,
        api_url: str,
        mail_from: str,
        timeout_s: float = 10.0,
    ) -> None:
        self.templates = templates
        self.http = http
        self.api_key = api_key
        self.url = f"{api_url.rstrip('/')}/v3/mail/send"
        self.mail_from = mail_from
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    def destination(self, channel: TriggerChannel) -> str:
        return "sendgrid"

    def payload(self, trigger: Trigger, to: str) -> dict[str, object]:
        rendered = self.templates.render(trigger)
        name, address = parseaddr(self.mail_from)
        sender: dict[str, str] = {"email": address or self.mail_from}
        if name:
            sender["name"] = name
        return {
            "personalizations": [{"to": [{"email": to}]}],
            "from": sender,
            "subject": rendered.subject,
            "content": [
                {"type": "text/plain", "value": rendered.text},
                {"type": "text/html", "value": rendered.html},
            ],
            # The same Message-ID as over SMTP: every attempt of one trigger carries it.
            "headers": {"Message-ID": message_id(trigger.event_id), EVENT_HEADER: trigger.event_id},
            "custom_args": {"event_id": trigger.event_id, "alert_id": trigger.alert_id},
        }

    async def send(self, trigger: Trigger, channel: TriggerChannel) -> Outcome:
        if not channel.to:
            return Outcome("permanent", "email channel without an address")
        try:
            async with self.http.post(
                self.url,
                data=json.dumps(self.payload(trigger, channel.to)),
                headers={
                    "Authorization": f"Bearer {self.api_key}",
                    "Content-Type": "application/json",
                },
                timeout=self.timeout,
                allow_redirects=False,
            ) as resp:
                return http_outcome(resp.status, await resp.text())
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Outcome("transient", f"SendGrid {type(exc).__name__}: {exc}"[:300])


class ForbiddenAddress(BlockedAddress, OSError):
    """A webhook host that is, or resolves only to, non-public addresses
    (:mod:`tickwatch_common.ssrf`); an ``OSError`` too, the failure aiohttp expects from a
    resolver (it wraps it in a ``ClientConnectorError``)."""


class PublicOnlyResolver(AbstractResolver):
    """Resolves like aiohttp does, then drops every non-public address.

    The gateway checks a webhook's host when the alert is saved; this checks again at connect
    time, on the very addresses the connection will use, so a name that later resolves to an
    internal address (DNS rebinding) is refused too.
    """

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self.inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = [
            r for r in await self.inner.resolve(host, port, family) if is_public_address(r["host"])
        ]
        if not results:
            raise ForbiddenAddress(f"{host!r} resolves to no public address")
        return results

    async def close(self) -> None:
        await self.inner.close()


def guarded_connector(inner: AbstractResolver | None = None) -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(resolver=PublicOnlyResolver(inner))


def literal_host_refused(url: str) -> str | None:
    """aiohttp skips the resolver for what looks like an IP literal (``127.1`` and
    ``2130706433`` included, which the system then reads as 127.0.0.1), so literals in every
    spelling are judged here; ``localhost`` names are refused outright."""
    host = urlsplit(url).hostname or ""
    if is_localhost_name(host):
        return "webhook host is loopback"
    literal = parse_host_address(host)
    if literal is not None and not is_public_address(str(literal)):
        return "webhook host is not a public address"
    return None


class Webhook:
    """POST of the trigger as JSON, signed with the alert's secret; no redirects followed.

    Unless ``allow_private``, ``http`` must use :func:`guarded_connector` so only public
    addresses are ever connected to.
    """

    def __init__(
        self, http: aiohttp.ClientSession, *, timeout_s: float = 5.0, allow_private: bool = False
    ) -> None:
        self.http = http
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.allow_private = allow_private

    def destination(self, channel: TriggerChannel) -> str:
        return f"webhook:{urlsplit(channel.url or '').netloc}"

    async def send(self, trigger: Trigger, channel: TriggerChannel) -> Outcome:
        if not channel.url:
            return Outcome("permanent", "webhook channel without a URL")
        if not channel.secret:
            return Outcome("permanent", "webhook channel without a signing secret")
        if not self.allow_private and (refused := literal_host_refused(channel.url)):
            return Outcome("permanent", refused)
        body = webhook_body(trigger)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Tickwatch-Webhook/1",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(channel.secret, timestamp, body),
            EVENT_HEADER: trigger.event_id,
        }
        try:
            async with self.http.post(
                channel.url, data=body, headers=headers, timeout=self.timeout, allow_redirects=False
            ) as resp:
                return http_outcome(resp.status, await resp.text())
        except aiohttp.ClientConnectorError as exc:
            if isinstance(_root_cause(exc), BlockedAddress):
                return Outcome("permanent", f"webhook refused: {_root_cause(exc)}"[:300])
            return Outcome("transient", f"webhook {type(exc).__name__}: {exc}"[:300])
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Outcome("transient", f"webhook {type(exc).__name__}: {exc}"[:300])


def _root_cause(exc: BaseException) -> Any:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BlockedAddress):
            return seen
        os_error = getattr(seen, "os_error", None)
        if isinstance(os_error, BlockedAddress):
            return os_error
        seen = seen.__cause__ or seen.__context__
    return None
