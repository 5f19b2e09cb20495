"""The ways out: SMTP, the SendGrid v3 HTTP API and signed webhooks.

Each ``send`` answers an :class:`Outcome` instead of raising: ``sent``, ``transient`` (worth
retrying: SMTP 4xx, timeouts, connection errors, HTTP 408/429/5xx) or ``permanent`` (SMTP 5xx,
other HTTP 4xx, a channel without an address).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Literal, Protocol
from urllib.parse import urlsplit

import aiohttp
import aiosmtplib
from tickwatch_common.events import Trigger, TriggerChannel

from tickwatch_notifier.messages import Templates, email_message, webhook_body

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
    """Email over SMTP (aiosmtplib): TLS, STARTTLS and login as configured."""

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
    ) -> None:
        self.templates = templates
        self.mail_from = mail_from
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.starttls, self.tls = starttls, tls
        self.timeout_s = timeout_s

    def destination(self, channel: TriggerChannel) -> str:
        return f"smtp:{self.host}:{self.port}"

    async def send(self, trigger: Trigger, channel: TriggerChannel) -> Outcome:
        if not channel.to:
            return Outcome("permanent", "email channel without an address")
        message = email_message(
            self.templates.render(trigger), mail_from=self.mail_from, to=channel.to, trigger=trigger
        )
        try:
            await aiosmtplib.send(
                message,
                hostname=self.host,
                port=self.port,
                username=self.username or None,
                password=self.password or None,
                use_tls=self.tls,
                start_tls=self.starttls,
                timeout=self.timeout_s,
            )
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
            "headers": {EVENT_HEADER: trigger.event_id},
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


class Webhook:
    """POST of the trigger as JSON, signed with the alert's secret; no redirects followed."""

    def __init__(self, http: aiohttp.ClientSession, *, timeout_s: float = 5.0) -> None:
        self.http = http
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    def destination(self, channel: TriggerChannel) -> str:
        return f"webhook:{urlsplit(channel.url or '').netloc}"

    async def send(self, trigger: Trigger, channel: TriggerChannel) -> Outcome:
        if not channel.url:
            return Outcome("permanent", "webhook channel without a URL")
        if not channel.secret:
            return Outcome("permanent", "webhook channel without a signing secret")
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
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Outcome("transient", f"webhook {type(exc).__name__}: {exc}"[:300])
