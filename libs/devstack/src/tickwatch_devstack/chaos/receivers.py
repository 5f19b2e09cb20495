"""The chaos run's own SMTP server and webhook receiver: each keeps what it accepted, parsed.

The SMTP server can be told to answer ``451`` to every message for a while (a mail server
that is overloaded or greylisting): a refused message is not kept, as a real server keeps
none. Both count a delivery by the alert and price it names and by its Message-ID or
``X-Tickwatch-Event-Id``, which is all the tally needs to find losses and duplicates.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import threading
import time
from decimal import Decimal, InvalidOperation

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tickwatch_devstack.chaos.tally import Delivery

_PRICE = re.compile(r"^Price:\s*(\S+)", re.MULTILINE)


class MailCounter:
    """The aiosmtpd handler; runs on the controller's thread, read from the run's loop."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.refused = 0
        self.unreadable = 0
        self._failing_until = 0.0
        self._lock = threading.Lock()

    def fail_for(self, seconds: float) -> None:
        with self._lock:
            self._failing_until = time.monotonic() + seconds

    def failing(self) -> bool:
        with self._lock:
            return time.monotonic() < self._failing_until

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.failing():
            with self._lock:
                self.refused += 1
            return "451 4.3.0 chaos: mail server busy, try again later"
        delivery = parse_mail(envelope.original_content or b"")
        with self._lock:
            if delivery is None:
                self.unreadable += 1
            else:
                self.deliveries.append(delivery)
        return "250 OK"

    def snapshot(self) -> list[Delivery]:
        with self._lock:
            return list(self.deliveries)


def parse_mail(raw: bytes) -> Delivery | None:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    body = msg.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else ""
    match = _PRICE.search(text)
    alert_id, event_id = msg.get("X-Tickwatch-Alert-Id"), msg.get("X-Tickwatch-Event-Id")
    if not (match and alert_id and event_id):
        return None
    try:
        price = Decimal(match.group(1))
    except InvalidOperation:
        return None
    return Delivery("email", str(alert_id), price, str(event_id), str(msg.get("Message-ID", "")))


class SmtpServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.counter = MailCounter()
        self._controller = Controller(self.counter, hostname="127.0.0.1", port=port)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


class WebhookReceiver:
    """Answers 200 to every POST and keeps the call, named by alert, price and event id."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.unreadable = 0
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw)
            self.deliveries.append(
                Delivery(
                    "webhook",
                    str(body["alert_id"]),
                    Decimal(str(body["price"])),
                    str(body["event_id"]),
                    request.headers.get("X-Tickwatch-Event-Id", ""),
                )
            )
        except (ValueError, KeyError, TypeError, InvalidOperation):
            self.unreadable += 1
        return web.Response(text="ok")

    async def start(self, port: int) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
