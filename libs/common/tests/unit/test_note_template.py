"""The note's placeholders with plain data: what the gateway refuses and what the notifier
writes, in the text and the HTML mail."""

from __future__ import annotations

import html

import pytest
from tickwatch_common.note_template import (
    ALLOWED_TEXT,
    PLACEHOLDERS,
    NoteTemplateError,
    parse,
    render,
)

VALUES = {
    "symbol": "BTC-USDT",
    "price": "70010.50",
    "condition": "crosses_up",
    "threshold": "70000",
    "time": "2026-11-18T11:06:40.000Z",
    "source": "binance",
    "alert_id": "a-1",
}


def refusal(note: str) -> str:
    with pytest.raises(NoteTemplateError) as caught:
        parse(note)
    return str(caught.value)


def test_every_placeholder_is_filled_with_or_without_spaces() -> None:
    note = " ".join(f"{{{{{name}}}}}" for name in sorted(VALUES))
    assert parse(note) == sorted(VALUES)
    assert render(note, VALUES, html=False) == " ".join(VALUES[n] for n in sorted(VALUES))
    assert parse("{{ price }} {{price  }} {{   price}}") == ["price"] * 3
    assert render("at {{ price }}, {{symbol}}!", VALUES, html=False) == "at 70010.50, BTC-USDT!"
    assert set(PLACEHOLDERS) == {*VALUES, "rsi"}


def test_a_name_without_a_value_for_this_trigger_renders_empty() -> None:
    assert parse("RSI {{rsi}}") == ["rsi"]
    assert render("RSI {{rsi}}.", VALUES, html=False) == "RSI ."
    assert render("from {{ source }}", {}, html=False) == "from "


def test_plain_text_and_single_braces_are_left_alone() -> None:
    for note in ["", "take profit", "a {b} c", "{ {price} }", "} } {", "price}} here"]:
        assert parse(note) == []
        assert render(note, VALUES, html=False) == note


@pytest.mark.parametrize(
    "note",
    [
        "{{nope}}",
        "{{ Price }}",
        "{{0.__class__}}",
        "{{ price.__class__ }}",
        "{{ price | upper }}",
        "{{ price() }}",
        "{{symbol}}{{}}",
        "{{ pri ce }}",
    ],
)
def test_an_unknown_name_is_refused_naming_it_and_the_allowed_ones(note: str) -> None:
    message = refusal(note)
    assert message.startswith("unknown placeholder")
    assert ALLOWED_TEXT in message and "{{symbol}}" in ALLOWED_TEXT and "{{rsi}}" in ALLOWED_TEXT


@pytest.mark.parametrize(
    "note",
    ["{{{{", "{{{{price}}}}", "{{{price}}}", "{{price", "a {{ price } b", "{{ {price} }}", "{{"],
)
def test_a_double_brace_that_opens_no_placeholder_is_refused(note: str) -> None:
    assert "opens no placeholder" in refusal(note)


def test_the_position_of_the_first_problem_is_named() -> None:
    assert "at position 13" in refusal("{{price}} ok {{what}}")
    assert "at position 3" in refusal("ok {{price")


def test_python_format_and_jinja_syntax_is_plain_text() -> None:
    for note in ["{0.__class__}", "{price}", "%(price)s", "{% for x in y %}", "{# c #}", "${x}"]:
        assert parse(note) == []
        assert render(note, VALUES, html=False) == note


def test_html_mail_escapes_the_note_and_the_values() -> None:
    note = """<script>alert("x")</script> & 'q' {{symbol}} <b>{{ price }}</b>"""
    values = {**VALUES, "symbol": '<img src=x onerror="y">&amp;', "price": "1 & 2 's'"}
    out = render(note, values, html=True)
    assert out == (
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;q&#x27; "
        "&lt;img src=x onerror=&quot;y&quot;&gt;&amp;amp; "
        "&lt;b&gt;1 &amp; 2 &#x27;s&#x27;&lt;/b&gt;"
    )
    assert "<" not in out and '"' not in out and "'" not in out
    # the same as escaping the plain rendering: no piece is escaped twice or missed
    assert out == html.escape(render(note, values, html=False), quote=True)
    # the text mail and the webhook get both as written
    assert render(note, values, html=False).startswith('<script>alert("x")</script> & ')


def test_a_value_holding_a_placeholder_is_not_filled_again() -> None:
    values = {**VALUES, "symbol": "{{price}}", "source": "{{ {{alert_id}} }}"}
    once = render("{{symbol}} / {{source}}", values, html=False)
    assert once == "{{price}} / {{ {{alert_id}} }}"
    assert render("{{symbol}}", values, html=True) == "{{price}}"


def test_render_never_fails_and_keeps_what_parse_refuses_as_written() -> None:
    note = "{{nope}} {{ price }} {{{{ {{0.__class__}} {{price"
    assert render(note, VALUES, html=False) == "{{nope}} 70010.50 {{{{ {{0.__class__}} {{price"
    assert render("<{{nope}}>", VALUES, html=True) == "&lt;{{nope}}&gt;"


def test_a_long_note_and_control_characters_go_through_in_linear_time() -> None:
    long = "{{ price }} " * 50_000
    assert len(parse(long)) == 50_000
    assert render(long, VALUES, html=True) == "70010.50 " * 50_000
    spaces = "{{" + " " * 200_000  # no backtracking blow-up on an unclosed placeholder
    assert "opens no placeholder" in refusal(spaces)
    assert render(spaces, VALUES, html=False) == spaces
    # The gateway refuses NUL before this rule runs; the renderer leaves it as any character.
    assert render("a\x00{{symbol}}\ttab\nline", VALUES, html=False) == "a\x00BTC-USDT\ttab\nline"
