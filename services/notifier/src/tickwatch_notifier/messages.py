"""What a notification says: the email (subject, text and HTML from templates) and the webhook body.

The alert's note is the user's text with its ``{{ name }}`` placeholders filled from the trigger
(:mod:`tickwatch_common.note_template`): as written in the text mail, HTML-escaped (its text and
the values) in the HTML mail, and in the webhook body as ``note_rendered`` beside the raw ``note``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from tickwatch_common.events import Trigger
from tickwatch_common.note_template import render as render_note
from tickwatch_common.note_template import trigger_values

TEMPLATES = Path(__file__).parent / "templates"

# RFC 5322 dot-atom-text: atext runs joined by single dots.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def _window(seconds: int | None) -> str:
    if not seconds:
        return ""
    if seconds % 3600 == 0:
        return f" within {seconds // 3600} h"
    if seconds % 60 == 0:
        return f" within {seconds // 60} min"
    return f" within {seconds} s"


def headline(trigger: Trigger) -> str:
    t = trigger.threshold
    return {
        "above": f"is at or above {t}",
        "below": f"is at or below {t}",
        "crosses_up": f"crossed up through {t}",
        "crosses_down": f"crossed down through {t}",
        "pct_change": f"moved {t}%{_window(trigger.window_seconds)}",
    }[trigger.condition]


def utc_time(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def alert_link(public_base_url: str, alert_id: str) -> str:
    return f"{public_base_url.rstrip('/')}/alerts/{alert_id}"


class Templates:
    def __init__(self, public_base_url: str) -> None:
        self.public_base_url = public_base_url
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(["html.j2"]),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )

    def render(self, trigger: Trigger) -> RenderedEmail:
        words = headline(trigger)
        context = {
            "symbol": trigger.symbol,
            "headline": words,
            "condition_text": f"{trigger.condition.replace('_', ' ')} {trigger.threshold}"
            + ("%" + _window(trigger.window_seconds) if trigger.condition == "pct_change" else ""),
            "price": _plain(trigger.price),
            "time_utc": utc_time(trigger.ts_event),
            "note": rendered_note(trigger, html=False),
            # escaped here, text and values alike: the template marks it safe (escaped once)
            "note_html": rendered_note(trigger, html=True),
            "link": alert_link(self.public_base_url, trigger.alert_id),
            "alert_id": trigger.alert_id,
            "event_id": trigger.event_id,
        }
        subject = self.env.get_template("alert.subject.j2").render(context).strip()
        return RenderedEmail(
            subject=" ".join(subject.split()),  # never a newline in a header
            text=self.env.get_template("alert.txt.j2").render(context),
            html=self.env.get_template("alert.html.j2").render(context),
        )


def rendered_note(trigger: Trigger, *, html: bool) -> str:
    """The note with its placeholders filled ("" without a note); ``html``: HTML-escaped."""
    if trigger.note is None:
        return ""
    return render_note(trigger.note, trigger_values(trigger), html=html)


def _plain(value: Decimal) -> str:
    """Decimal as people write it: no exponent."""
    return format(value, "f")


def message_id(event_id: str, channel: str = "email") -> str:
    """The ``Message-ID`` of every e-mail of one trigger on one channel: every attempt and every
    restart send the same one, so a receiver (or its mail client) drops a repeat after a crash.

    ``<{event_id}.{channel}@tickwatch>`` when that is an RFC 5322 ``msg-id`` (the engine's
    event ids are UUIDs); otherwise the event id's SHA-256 stands in for it, still deterministic.
    """
    left = f"{event_id}.{channel}"
    if not _DOT_ATOM.fullmatch(left):
        left = f"{hashlib.sha256(event_id.encode()).hexdigest()}.{channel}"
    return f"<{left}@tickwatch>"


def email_message(
    rendered: RenderedEmail, *, mail_from: str, to: str, trigger: Trigger
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = mail_from
    msg["To"] = to
    msg["Subject"] = rendered.subject
    msg["Date"] = format_datetime(datetime.fromtimestamp(trigger.triggered_at / 1000, UTC))
    msg["Message-ID"] = message_id(trigger.event_id)
    msg["X-Tickwatch-Event-Id"] = trigger.event_id
    msg["X-Tickwatch-Alert-Id"] = trigger.alert_id
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    return msg


def webhook_body(trigger: Trigger) -> bytes:
    """The JSON a webhook receives: the trigger without channel details (no secrets). ``note`` is
    the note as its owner wrote it (as the API answers it), ``note_rendered`` the same with its
    placeholders filled, not escaped (``null`` both without a note)."""
    payload = {
        "type": "alert.triggered",
        "event_id": trigger.event_id,
        "alert_id": trigger.alert_id,
        "user_id": trigger.user_id,
        "sequence": trigger.sequence,
        "symbol": trigger.symbol,
        "condition": trigger.condition,
        "threshold": str(trigger.threshold),
        "price": str(trigger.price),
        "window_seconds": trigger.window_seconds,
        "ts_event": trigger.ts_event,
        "triggered_at": trigger.triggered_at,
        "note": trigger.note,
        "note_rendered": None if trigger.note is None else rendered_note(trigger, html=False),
    }
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
