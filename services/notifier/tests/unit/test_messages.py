"""Templates, the webhook body and its signature, outcome classification and retry delays."""

from __future__ import annotations

import email
import email.policy
import email.utils
import html
import json
import uuid

import aiohttp
from tickwatch_common.events import Trigger, TriggerChannel
from tickwatch_notifier.channels import SendGridEmail, http_outcome, sign, verify
from tickwatch_notifier.dispatcher import retry_delay, without_secrets
from tickwatch_notifier.messages import Templates, email_message, message_id, webhook_body


def trigger(**kw: object) -> Trigger:
    fields: dict[str, object] = {
        "event_id": "e-1",
        "alert_id": "a-1",
        "user_id": "u-1",
        "sequence": 1,
        "symbol": "BTC-USDT",
        "condition": "crosses_up",
        "threshold": "70000",
        "price": "70010.50",
        "ts_event": 1_795_000_000_000,
        "triggered_at": 1_795_000_000_010,
        "channels": [TriggerChannel(type="email", to="t@example.com")],
        "note": "take <profit>",
    }
    fields.update(kw)
    return Trigger.model_validate(fields)


def test_email_has_text_and_html_with_every_detail() -> None:
    rendered = Templates("https://tickwatch.example/").render(trigger())
    assert rendered.subject == "Tickwatch: BTC-USDT crossed up through 70000"
    for part in (rendered.text, rendered.html):
        assert "BTC-USDT" in part
        assert "70010.50" in part
        assert "2026-11-18 11:06:40 UTC" in part
        assert "https://tickwatch.example/alerts/a-1" in part
    assert "take <profit>" in rendered.text
    assert "take &lt;profit&gt;" in rendered.html  # the user's note is escaped in HTML


HOSTILE = (
    """<script>alert('x')</script> "q" & {{symbol}} at {{ price }} ({{condition}} {{threshold}},"""
    """ {{time}}, {{source}}, {{alert_id}}) rsi={{rsi}} {0.__class__} {% raw %}{{nope}}"""
)


def test_the_note_is_filled_from_the_trigger_as_written_in_text_and_escaped_in_html() -> None:
    t = trigger(note=HOSTILE, symbol="ETH-USDT", price="70010.50", source="binance")
    t = t.model_copy(update={"ts_event": 1_795_000_000_007})
    filled = (
        """<script>alert('x')</script> "q" & ETH-USDT at 70010.50 (crosses_up 70000,"""
        """ 2026-11-18T11:06:40.007Z, binance, a-1) rsi= {0.__class__} {% raw %}{{nope}}"""
    )
    rendered = Templates("http://x").render(t)
    assert f"Your note: {filled}\n" in rendered.text
    escaped = html.escape(filled, quote=True)
    assert f"<em>{escaped}</em>" in rendered.html  # escaped once: no &amp;lt;
    assert "<script>" not in rendered.html and "&amp;lt;" not in rendered.html
    body = json.loads(webhook_body(t))
    assert (body["note"], body["note_rendered"]) == (HOSTILE, filled)


def test_a_value_that_looks_like_markup_is_escaped_and_not_filled_again() -> None:
    # no symbol can hold these characters; the notifier escapes any value all the same
    t = trigger(note="{{alert_id}}", alert_id="<i>{{price}}</i>")
    rendered = Templates("http://x").render(t)
    assert "Your note: <i>{{price}}</i>\n" in rendered.text
    assert "<em>&lt;i&gt;{{price}}&lt;/i&gt;</em>" in rendered.html


def test_without_a_note_the_webhook_says_null_twice_and_a_missing_value_is_empty() -> None:
    body = json.loads(webhook_body(trigger(note=None)))
    assert (body["note"], body["note_rendered"]) == (None, None)
    older = trigger(note="[{{source}}]")  # from an engine that did not yet set the source
    assert json.loads(webhook_body(older))["note_rendered"] == "[]"


def test_pct_change_headline_names_the_window() -> None:
    rendered = Templates("http://x").render(
        trigger(condition="pct_change", threshold="5", window_seconds=3600, note=None)
    )
    assert rendered.subject == "Tickwatch: BTC-USDT moved 5% within 1 h"
    assert "Your note" not in rendered.text


def test_message_is_multipart_with_a_deterministic_message_id() -> None:
    t = trigger()
    msg = email_message(
        Templates("http://x").render(t), mail_from="A <a@x>", to="t@example.com", trigger=t
    )
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert parsed["Message-ID"] == "<e-1.email@tickwatch>"


def test_message_id_is_one_valid_id_per_trigger_and_channel() -> None:
    event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "a-1:1"))  # as the engine derives them
    assert message_id(event_id) == f"<{event_id}.email@tickwatch>" == message_id(event_id)
    assert message_id(event_id, "webhook") != message_id(event_id)
    # An id that is not dot-atom text (here: "@", space, "..") still gives a valid, stable id.
    odd = message_id("a@b c..d")
    assert odd == message_id("a@b c..d") and odd != message_id("a@b c..e")
    left = odd.removeprefix("<").removesuffix("@tickwatch>")
    assert left.endswith(".email") and "@" not in left and " " not in left
    assert email.utils.parseaddr(odd[1:-1])[1] == odd[1:-1]


async def test_sendgrid_mail_carries_the_same_message_id_as_smtp() -> None:
    async with aiohttp.ClientSession() as http:
        sendgrid = SendGridEmail(
            Templates("http://x"), http, api_key="k", api_url="http://sg", mail_from="A <a@x>"
        )
        payload = sendgrid.payload(trigger(), "t@example.com")
    assert payload["headers"] == {
        "Message-ID": "<e-1.email@tickwatch>",
        "X-Tickwatch-Event-Id": "e-1",
    }


def test_signature_verifies_with_the_secret_only() -> None:
    body = webhook_body(trigger())
    signature = sign("s3cret", "1700000000", body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify("s3cret", "1700000000", body, signature)
    assert not verify("other", "1700000000", body, signature)
    assert not verify("s3cret", "1700000001", body, signature)


def test_webhook_body_carries_decimals_as_strings_and_no_secret() -> None:
    t = trigger(channels=[TriggerChannel(type="webhook", url="http://h/x", secret="s")])
    body = json.loads(webhook_body(t))
    assert body["price"] == "70010.50" and body["threshold"] == "70000"
    assert "secret" not in json.dumps(body)
    assert without_secrets(t).channels[0].secret is None


def test_http_status_classification() -> None:
    assert http_outcome(202, "").result == "sent"
    assert http_outcome(429, "").result == "transient"
    assert http_outcome(503, "").result == "transient"
    assert http_outcome(400, "").result == "permanent"
    assert http_outcome(404, "").result == "permanent"


def test_retry_delay_grows_exponentially_with_jitter_and_is_capped() -> None:
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (10, 30.0)]:
        delay = retry_delay(attempt, 1.0, 30.0)
        assert ceiling / 2 <= delay <= ceiling
