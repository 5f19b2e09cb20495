"""An alert's note as a message template: ``{{ name }}`` placeholders from a fixed list, filled
with a trigger's values. The gateway refuses a note :func:`parse` refuses; the notifier fills it
with :func:`render`. One rule for both, so a note the gateway accepts is one the notifier renders.

The note is user input, so this is a substitution over a whitelist, not a template language:
no expressions, attributes, filters or loops, nothing of the note is ever evaluated (no Jinja,
no ``str.format``).

- A placeholder is ``{{``, optional spaces, a name from :data:`PLACEHOLDERS`, optional spaces,
  ``}}``. Single braces are plain text. Every ``{{`` must open a placeholder: there is no
  escape for a literal ``{{`` (a note has no need of one).
- A name in the list that the trigger has no value for (``rsi`` on a price alert, ``source``
  from an engine older than the field) renders as the empty string.
- :func:`render` never fails: whatever :func:`parse` would refuse (a note saved before these
  rules) stays as written. One pass: a value holding ``{{ price }}`` is not filled again.
- ``html=True`` (the HTML mail) escapes both the note's own text and the values; the text mail
  and the webhook get them as they are.

Adding a name is additive (every note saved stays valid); removing one is not.
"""

from __future__ import annotations

import html as html_module
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from tickwatch_common.events.alerts import Trigger
from tickwatch_common.text import MULTILINE_CONTROLS

TRIGGER_PLACEHOLDERS: tuple[str, ...] = (
    "symbol",
    "price",
    "condition",
    "threshold",
    "time",
    "source",
    "alert_id",
)
"""What every trigger carries (``source`` since the engine puts it on the trigger)."""
INDICATOR_PLACEHOLDERS: tuple[str, ...] = ("rsi",)
"""Values only an indicator alert will carry (none does yet): empty on every other trigger."""
PLACEHOLDERS: frozenset[str] = frozenset(TRIGGER_PLACEHOLDERS + INDICATOR_PLACEHOLDERS)
ALLOWED_TEXT = ", ".join(
    f"{{{{{name}}}}}" for name in TRIGGER_PLACEHOLDERS + INDICATOR_PLACEHOLDERS
)
"""The names as a person reads them in an error or the API's description: ``{{symbol}}, …``."""

_OPEN = "{{"
_PLACEHOLDER = re.compile(r"\{\{([^{}]*)\}\}")
"""``{{``, the inside (no brace), ``}}``: the inside, less its spaces, is checked against the
list afterwards, so ``{{ price | upper }}`` is an unknown name, not plain text (and no
backtracking: linear in the note's length)."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class NoteTemplateError(ValueError):
    """A note the gateway refuses: an unknown name, or a ``{{`` that opens no placeholder."""


def parse(note: str) -> list[str]:
    """The placeholder names of ``note`` in order (repeats kept), or :class:`NoteTemplateError`
    naming the first problem and its position."""
    names: list[str] = []
    position = note.find(_OPEN)
    while position != -1:
        found = _PLACEHOLDER.match(note, position)
        if found is None:
            raise NoteTemplateError(
                f"'{{{{' at position {position} opens no placeholder: write {{{{name}}}}"
                f" with one of {ALLOWED_TEXT}"
            )
        name = found.group(1).strip(" ")
        if name not in PLACEHOLDERS:
            raise NoteTemplateError(
                f"unknown placeholder {found.group()!r} at position {position}:"
                f" the names are {ALLOWED_TEXT}"
            )
        names.append(name)
        position = note.find(_OPEN, found.end())
    return names


def render(note: str, values: Mapping[str, str], *, html: bool) -> str:
    """``note`` with each known placeholder replaced by its value (empty when ``values`` has
    none); with ``html``, the note's text and the values HTML-escaped (quotes too)."""
    escape = _escape_html if html else _as_is
    out: list[str] = []
    last = 0
    for found in _PLACEHOLDER.finditer(note):
        name = found.group(1).strip(" ")
        if name not in PLACEHOLDERS:
            continue  # stays as written, with the text around it
        out.append(escape(note[last : found.start()]))
        out.append(escape(values.get(name, "")))
        last = found.end()
    out.append(escape(note[last:]))
    return "".join(out)


def schema_pattern(excluded: str) -> str:
    """The rule as a JSON Schema ``pattern`` over text without the ``excluded`` characters (the
    inside of a regex character class, e.g. :data:`tickwatch_common.text.MULTILINE_CONTROLS`):
    each ``{`` is plain text unless another follows, and then it opens a placeholder whole.
    Ends in ``$(?!\\n)`` as :class:`tickwatch_common.text.CleanText` patterns do."""
    names = "|".join(sorted(PLACEHOLDERS))
    return rf"^(?:[^{{{excluded}]|\{{(?!\{{)|\{{\{{ *(?:{names}) *\}}\}})*$(?!\n)"


@dataclass(frozen=True)
class KnownPlaceholders:
    """``Annotated[str, CleanText(multiline=True), KnownPlaceholders()]``: a note :func:`parse`
    refuses is a pydantic error at the field (so a 422 names it and lists the allowed names),
    and the JSON Schema's ``pattern`` states the same rule (a fuzzer reading it agrees).
    ``excluded``: the characters the ``CleanText`` before it refuses, for that pattern."""

    excluded: str = MULTILINE_CONTROLS

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(_checked, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["pattern"] = schema_pattern(self.excluded)
        return json_schema


def _checked(note: str) -> str:
    try:
        parse(note)
    except NoteTemplateError as exc:
        raise PydanticCustomError("note_placeholder", "{reason}", {"reason": str(exc)}) from None
    return note


def trigger_values(trigger: Trigger) -> dict[str, str]:
    """The values of one trigger, as exact strings: decimals with the digits the event carries,
    ``time`` the tick's time in ISO-8601 UTC to the millisecond, ``condition`` as the API
    names it (``crosses_up``; for ``pct_change`` ``threshold`` is the percentage)."""
    values = {
        "symbol": trigger.symbol,
        "price": format(trigger.price, "f"),
        "condition": trigger.condition,
        "threshold": format(trigger.threshold, "f"),
        "time": iso_utc(trigger.ts_event),
        "alert_id": trigger.alert_id,
    }
    if trigger.source is not None:
        values["source"] = trigger.source
    return values


def iso_utc(ts_ms: int) -> str:
    """``2026-11-18T11:06:40.000Z``, as the API writes its timestamps."""
    moment = _EPOCH + timedelta(milliseconds=ts_ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _escape_html(text: str) -> str:
    return html_module.escape(text, quote=True)


def _as_is(text: str) -> str:
    return text
