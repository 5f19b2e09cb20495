"""The notifier in-process against the real broker and PostgreSQL, with real SMTP and HTTP servers."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from tickwatch_common.events import Trigger, TriggerChannel
from tickwatch_common.kafka import Publisher
from tickwatch_common.postgres import migrate
from tickwatch_common.topics import ALERTS_TRIGGERED
from tickwatch_devstack.testing import wait_until
from tickwatch_notifier.__main__ import running_notifier
from tickwatch_notifier.channels import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tickwatch_notifier.deliveries import MIGRATIONS, SCHEMA
from tickwatch_notifier.settings import Settings

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_trigger(channels: list[TriggerChannel], **kw: Any) -> Trigger:
    alert_id = kw.pop("alert_id", f"a-{uuid.uuid4().hex[:10]}")
    fields: dict[str, Any] = {
        "event_id": f"e-{uuid.uuid4().hex}",
        "alert_id": alert_id,
        "user_id": "u-1",
        "sequence": 1,
        "symbol": "ETH-USDT",
        "condition": "above",
        "threshold": "3500",
        "price": "3501.25",
        "ts_event": 1_795_000_000_000,
        "triggered_at": 1_795_000_000_005,
        "channels": channels,
        "note": "time to sell",
    }
    fields.update(kw)
    return Trigger.model_validate(fields)


def email_to() -> str:
    return f"trader-{uuid.uuid4().hex[:10]}@example.com"


async def send(publisher: Publisher, trigger: Trigger) -> None:
    await publisher.publish(ALERTS_TRIGGERED, trigger, key=trigger.alert_id)


def mails_to(mail_dir: Path, address: str) -> list[email.message.EmailMessage]:
    found = []
    for sidecar in mail_dir.glob("*.eml.json"):
        if address in json.loads(sidecar.read_text())["rcpt_tos"]:
            raw = (mail_dir / sidecar.name.removesuffix(".json")).read_bytes()
            found.append(email.message_from_bytes(raw, policy=email.policy.default))
    return found


class ScriptedSMTP:
    """An SMTP server that answers ``code`` to the first ``failures`` messages for ``to``.

    Mail for anyone else is accepted and not counted: the triggers topic is shared by the whole
    session, and a fresh group may still be handed another test's trigger, which must not spend
    this test's script.
    """

    def __init__(self, failures: int, code: str, to: str) -> None:
        self.failures, self.code, self.to = failures, code, to
        self.attempts = 0
        self.accepted: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.to not in envelope.rcpt_tos:
            return "250 OK"
        self.attempts += 1
        if self.attempts <= self.failures:
            return self.code
        self.accepted.append(envelope.original_content or b"")
        return "250 OK"


@pytest.fixture
def scripted_smtp() -> Any:
    controllers: list[Controller] = []

    def start(failures: int, code: str, to: str) -> tuple[ScriptedSMTP, int]:
        handler = ScriptedSMTP(failures, code, to)
        port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        controller.start()
        controllers.append(controller)
        return handler, port

    yield start
    for c in controllers:
        c.stop()


@pytest.fixture
async def http_server() -> AsyncIterator[Callable[[web.Application], Any]]:
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield start
    for r in runners:
        await r.cleanup()


async def test_one_email_with_the_right_content_reaches_the_mail_catcher(
    stack: Any, publisher: Publisher, outcomes: Any, notifier_settings: Settings
) -> None:
    to = email_to()
    note = "time to sell {{symbol}} at {{ price }} <b>&</b>"
    trigger = make_trigger([TriggerChannel(type="email", to=to)], note=note)
    later = make_trigger([TriggerChannel(type="email", to=email_to())], alert_id=trigger.alert_id)
    async with running_notifier(notifier_settings, serve_ops=False) as worker:
        await wait_until(worker.assigned.is_set, what="assignment")
        await send(publisher, trigger)
        await send(publisher, trigger)  # the same trigger twice on the wire
        await send(publisher, later)  # same partition, after both copies
        await wait_until(lambda: "sent" in outcomes.status_of(later.event_id), what="sent")
    assert outcomes.status_of(trigger.event_id) == ["sent"]
    [mail] = mails_to(stack.mail_dir, to)
    assert mail["To"] == to
    assert mail["From"] == "Tickwatch <alerts@tickwatch.test>"
    assert mail["Subject"] == "Tickwatch: ETH-USDT is at or above 3500"
    assert mail["Message-ID"] == f"<{trigger.event_id}.email@tickwatch>"
    text = mail.get_body(preferencelist=("plain",)).get_content()
    html = mail.get_body(preferencelist=("html",)).get_content()
    for part in (text, html):
        assert "ETH-USDT" in part and "3501.25" in part
        assert "2026-11-18 11:06:40 UTC" in part
        assert f"https://tickwatch.test/alerts/{trigger.alert_id}" in part
    # the note's placeholders filled; its markup escaped in the HTML part only
    assert "time to sell ETH-USDT at 3501.25 <b>&</b>" in text
    assert "time to sell ETH-USDT at 3501.25 &lt;b&gt;&amp;&lt;/b&gt;" in html
    conn = await asyncpg.connect(notifier_settings.database_url)
    try:
        row = await conn.fetchrow(
            "SELECT status, attempts, published FROM notifier.delivery WHERE event_id = $1",
            trigger.event_id,
        )
    finally:
        await conn.close()
    assert (row["status"], row["attempts"], row["published"]) == ("sent", 1, "sent")


async def test_smtp_4xx_for_a_while_then_recovery_delivers_once(
    publisher: Publisher, outcomes: Any, notifier_settings: Settings, scripted_smtp: Any
) -> None:
    to = email_to()
    server, port = scripted_smtp(3, "451 4.3.0 Try again later", to)
    settings = notifier_settings.model_copy(update={"smtp_port": port})
    trigger = make_trigger([TriggerChannel(type="email", to=to)])
    async with running_notifier(settings, serve_ops=False) as worker:
        await wait_until(worker.assigned.is_set, what="assignment")
        await send(publisher, trigger)
        await wait_until(lambda: "sent" in outcomes.status_of(trigger.event_id), what="sent")
    assert outcomes.status_of(trigger.event_id) == ["retrying"] * 3 + ["sent"]
    assert [s.attempts for s in outcomes.statuses if s.event_id == trigger.event_id] == [1, 2, 3, 4]
    assert server.attempts == 4 and len(server.accepted) == 1


async def test_smtp_5xx_fails_once_to_status_and_dlq(
    publisher: Publisher, outcomes: Any, notifier_settings: Settings, scripted_smtp: Any
) -> None:
    to = email_to()
    server, port = scripted_smtp(10**6, "550 5.1.1 Mailbox unavailable", to)
    settings = notifier_settings.model_copy(update={"smtp_port": port})
    trigger = make_trigger([TriggerChannel(type="email", to=to)])
    async with running_notifier(settings, serve_ops=False) as worker:
        await wait_until(worker.assigned.is_set, what="assignment")
        await send(publisher, trigger)
        await wait_until(
            lambda: any(d.event_id == trigger.event_id for d in outcomes.dead), what="dlq"
        )
        await wait_until(lambda: "failed" in outcomes.status_of(trigger.event_id), what="failed")
    assert outcomes.status_of(trigger.event_id) == ["failed"]
    [dead] = [d for d in outcomes.dead if d.event_id == trigger.event_id]
    assert dead.attempts == 1 and "550" in dead.reason and dead.trigger.alert_id == trigger.alert_id
    assert server.attempts == 1 and not server.accepted


async def test_webhook_is_signed_retried_on_503_and_delivered_once(
    publisher: Publisher, outcomes: Any, notifier_settings: Settings, http_server: Any
) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=503 if len(received) == 1 else 204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    base = await http_server(app)
    secret = uuid.uuid4().hex
    trigger = make_trigger(
        [TriggerChannel(type="webhook", url=f"{base}/hook", secret=secret)],
        note="{{symbol}} <at> {{price}}",
    )
    async with running_notifier(notifier_settings, serve_ops=False) as worker:
        await wait_until(worker.assigned.is_set, what="assignment")
        await send(publisher, trigger)
        await wait_until(lambda: "sent" in outcomes.status_of(trigger.event_id), what="sent")
    assert outcomes.status_of(trigger.event_id) == ["retrying", "sent"]
    assert len(received) == 2
    # Every attempt carries the same event id, for the receiver to drop a repeat by.
    assert [h["X-Tickwatch-Event-Id"] for h, _ in received] == [trigger.event_id] * 2
    headers, body = received[-1]
    assert verify(secret, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
    assert not verify("wrong", headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
    payload = json.loads(body)
    assert payload["event_id"] == trigger.event_id and payload["price"] == "3501.25"
    assert payload["note"] == "{{symbol}} <at> {{price}}"  # as the owner wrote it
    assert payload["note_rendered"] == "ETH-USDT <at> 3501.25"  # filled, never escaped


async def test_webhook_4xx_is_permanent(
    publisher: Publisher, outcomes: Any, notifier_settings: Settings, http_server: Any
) -> None:
    async def gone(_: web.Request) -> web.Response:
        return web.Response(status=410)

    app = web.Application()
    app.router.add_post("/gone", gone)
    base = await http_server(app)
    trigger = make_trigger([TriggerChannel(type="webhook", url=f"{base}/gone", secret="s")])
    async with running_notifier(notifier_settings, serve_ops=False) as worker:
        await wait_until(worker.assigned.is_set, what="assignment")
        await send(publisher, trigger)
        await wait_until(lambda: "failed" in outcomes.status_of(trigger.event_id), what="failed")
    [dead] = [d for d in outcomes.dead if d.event_id == trigger.event_id]
    assert dead.channel == "webhook" and "410" in dead.reason
    assert dead.trigger.channels[0].secret is None  # no secrets on the DLQ


async def test_sendgrid_receives_the_v3_payload(
    publisher: Publisher, outcomes: Any, notifier_settings: Settings, http_server: Any
) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    async def mail_send(request: web.Request) -> web.Response:
        calls.append((request.headers.get("Authorization", ""), await request.json()))
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/v3/mail/send", mail_send)
    base = await http_server(app)
    settings = notifier_settings.model_copy(
        update={"sendgrid_api_key": "SG.test-key", "sendgrid_api_url": base}
    )
    to = email_to()
    trigger = make_trigger([TriggerChannel(type="email", to=to)], condition="crosses_down")
    async with running_notifier(settings, serve_ops=False) as worker:
        await wait_until(worker.assigned.is_set, what="assignment")
        await send(publisher, trigger)
        await wait_until(lambda: "sent" in outcomes.status_of(trigger.event_id), what="sent")
    # Another test's trigger may reach this notifier too (a fresh group on a shared topic):
    # only the mail to this test's recipient is this test's.
    [(auth, payload)] = [c for c in calls if c[1]["personalizations"][0]["to"][0]["email"] == to]
    assert auth == "Bearer SG.test-key"
    assert payload["personalizations"] == [{"to": [{"email": to}]}]
    assert payload["from"] == {"email": "alerts@tickwatch.test", "name": "Tickwatch"}
    assert payload["subject"] == "Tickwatch: ETH-USDT crossed down through 3500"
    assert [c["type"] for c in payload["content"]] == ["text/plain", "text/html"]
    assert all("3501.25" in c["value"] for c in payload["content"])
    assert payload["custom_args"]["event_id"] == trigger.event_id
    assert payload["headers"]["Message-ID"] == f"<{trigger.event_id}.email@tickwatch>"


async def test_deliveries_left_by_a_crash_are_finished_once_after_restart(
    stack: Any, outcomes: Any, notifier_settings: Settings
) -> None:
    """A crash after recording (pending) or mid-send (sending, lease run out) loses nothing;
    a delivery already sent is not sent again."""

    pending, sending, sent = (
        make_trigger([TriggerChannel(type="email", to=email_to())]) for _ in range(3)
    )
    await migrate(notifier_settings.database_url, SCHEMA, MIGRATIONS)
    conn = await asyncpg.connect(notifier_settings.database_url)
    try:
        for trigger, status, lease in (
            (pending, "pending", None),
            (sending, "sending", "now() - interval '1 second'"),
            (sent, "sent", None),
        ):
            await conn.execute(
                "INSERT INTO notifier.delivery (event_id, channel, alert_id, user_id, trigger,"
                " status, attempts, lease_until, published) VALUES ($1, 'email', $2, $3, $4::jsonb,"
                f" $5, $6, {lease or 'NULL'}, $7)",
                trigger.event_id,
                trigger.alert_id,
                trigger.user_id,
                trigger.model_dump_json(),
                status,
                0 if status == "pending" else 1,
                "sent" if status == "sent" else None,
            )
    finally:
        await conn.close()
    async with running_notifier(notifier_settings, serve_ops=False):
        await wait_until(
            lambda: (
                "sent" in outcomes.status_of(pending.event_id)
                and "sent" in outcomes.status_of(sending.event_id)
            ),
            what="recovered deliveries",
        )
    assert len(mails_to(stack.mail_dir, pending.channels[0].to)) == 1
    assert len(mails_to(stack.mail_dir, sending.channels[0].to)) == 1
    assert [s.attempts for s in outcomes.statuses if s.event_id == sending.event_id] == [2]
    assert mails_to(stack.mail_dir, sent.channels[0].to) == []
    assert outcomes.status_of(sent.event_id) == []


async def test_a_stalled_webhook_host_does_not_hold_up_other_deliveries(
    publisher: Publisher, outcomes: Any, notifier_settings: Settings, http_server: Any
) -> None:
    release = asyncio.Event()
    stalled: list[str] = []
    fast: list[str] = []

    async def slow(request: web.Request) -> web.Response:
        stalled.append(request.headers["X-Tickwatch-Event-Id"])
        await release.wait()
        return web.Response(status=204)

    async def quick(request: web.Request) -> web.Response:
        fast.append(request.headers["X-Tickwatch-Event-Id"])
        return web.Response(status=204)

    slow_app, quick_app = web.Application(), web.Application()
    slow_app.router.add_post("/hook", slow)
    quick_app.router.add_post("/hook", quick)
    slow_base, quick_base = await http_server(slow_app), await http_server(quick_app)
    settings = notifier_settings.model_copy(
        update={"notifier_max_per_destination": 2, "notifier_max_concurrent": 3}
    )
    slow_ones = [
        make_trigger([TriggerChannel(type="webhook", url=f"{slow_base}/hook", secret="s")])
        for _ in range(6)
    ]
    quick_one = make_trigger([TriggerChannel(type="webhook", url=f"{quick_base}/hook", secret="s")])
    async with running_notifier(settings, serve_ops=False) as worker:
        await wait_until(worker.assigned.is_set, what="assignment")
        for trigger in slow_ones:
            await send(publisher, trigger)
        await wait_until(lambda: len(stalled) == 2, what="the stalled host holding its two slots")
        await send(publisher, quick_one)
        await wait_until(
            lambda: "sent" in outcomes.status_of(quick_one.event_id), what="quick sent"
        )
        assert len(stalled) == 2  # the stalled host never got more than its share
        release.set()
        await wait_until(
            lambda: all("sent" in outcomes.status_of(t.event_id) for t in slow_ones),
            what="the stalled host's deliveries, once it answers",
        )
    assert fast == [quick_one.event_id]
    assert sorted(stalled) == sorted(t.event_id for t in slow_ones)


async def test_many_emails_reuse_a_few_smtp_connections_closed_with_the_notifier(
    publisher: Publisher, outcomes: Any, notifier_settings: Settings, counting_smtp: Any
) -> None:
    server = counting_smtp()
    settings = notifier_settings.model_copy(update={"smtp_port": server.port, "smtp_pool_size": 2})
    triggers = [make_trigger([TriggerChannel(type="email", to=email_to())]) for _ in range(20)]
    async with running_notifier(settings, serve_ops=False) as worker:
        await wait_until(worker.assigned.is_set, what="assignment")
        for trigger in triggers:
            await send(publisher, trigger)
        await wait_until(
            lambda: all("sent" in outcomes.status_of(t.event_id) for t in triggers), what="sent"
        )
        assert 1 <= len(server.sessions) <= 2 and server.open == len(server.sessions)
    await wait_until(lambda: server.open == 0, what="the pool's connections closed")
    ours = [t.channels[0].to.encode() for t in triggers]  # another test's trigger may come too
    assert sum(any(to in mail for to in ours) for mail in server.accepted) == 20
    assert server.quits == len(server.sessions)
