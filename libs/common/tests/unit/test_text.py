"""The constrained client text: what it refuses, the field its error names, and a published
pattern that says exactly what the validator does."""

from __future__ import annotations

import re
from typing import Annotated

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from tickwatch_common.text import CleanText, MultilineText, Text

DECIMAL = CleanText(pattern=r"[0-9]{1,20}(\.[0-9]{1,18})?")


class Body(BaseModel):
    name: Annotated[str, CleanText(min_length=1, max_length=10)]
    note: MultilineText | None = None
    price: Annotated[str, DECIMAL] = "1"
    any_line: Text = ""


def refusal(**fields: object) -> tuple[tuple[str | int, ...], str]:
    with pytest.raises(ValidationError) as caught:
        Body.model_validate({"name": "n", **fields})
    (error,) = caught.value.errors()
    return error["loc"], error["msg"]


@pytest.mark.parametrize("bad", ["a\x00b", "a\ud800", "\udfff", "a\tb", "a\nb", "a\x1bb", "\x7f"])
def test_one_line_text_refuses_nul_controls_and_lone_surrogates_naming_the_field(bad: str) -> None:
    loc, message = refusal(any_line=bad)
    assert loc == ("any_line",)
    assert message.startswith("must not contain")


def test_the_message_says_which_character_and_where() -> None:
    assert refusal(any_line="ab\x00")[1] == "must not contain a NUL character (at position 2)"
    assert "lone surrogate (U+D800)" in refusal(any_line="\ud800")[1]


def test_free_text_keeps_tab_and_line_breaks_but_not_the_other_controls() -> None:
    assert Body(name="n", note="line one\r\nline\ttwo\n").note == "line one\r\nline\ttwo\n"
    assert refusal(note="a\x00")[0] == ("note",)
    assert refusal(note="a\x0c")[0] == ("note",)


def test_other_unicode_passes_unchanged() -> None:
    assert Body(name="Zoë 😀 日本").name == "Zoë 😀 日本"


def test_lengths_keep_pydantics_own_messages() -> None:
    assert refusal(name="")[1] == "String should have at least 1 character"
    assert refusal(name="x" * 11)[1] == "String should have at most 10 characters"


@pytest.mark.parametrize("bad", ["\u0667\u0660\u0660\u0660\u0660", "70000\n", "7e3", "-1", "1."])
def test_a_pattern_reads_ascii_digits_only_and_the_whole_value(bad: str) -> None:
    assert refusal(price=bad)[0] == ("price",)


def test_the_published_schema_carries_the_rule_and_the_lengths() -> None:
    props = Body.model_json_schema()["properties"]
    assert props["name"]["minLength"] == 1 and props["name"]["maxLength"] == 10
    assert "\\x00" in props["name"]["pattern"]
    assert props["price"]["pattern"] == "^(?:[0-9]{1,20}(\\.[0-9]{1,18})?)$(?!\\n)"


def _accepted(field: str, value: str) -> bool:
    try:
        Body.model_validate({"name": "n", field: value})
    except ValidationError:
        return False
    return True


@given(st.text(alphabet=st.characters(codec=None, categories=None, exclude_categories=["Cs"])))
def test_schema_pattern_and_validator_agree_on_any_string(value: str) -> None:
    """Read as a JSON Schema tool reads it (``re.search``, Python's ``$``), the pattern accepts
    exactly what the validator accepts: a fuzzer reading the schema finds no disagreement. (Lone
    surrogates are not Unicode scalar values, which is all a JSON Schema pattern reads; the
    validator refuses them, below.)"""
    props = Body.model_json_schema()["properties"]
    for field, schema in (("any_line", props["any_line"]), ("note", props["note"]["anyOf"][0])):
        assert bool(re.search(schema["pattern"], value)) == _accepted(field, value)


@given(st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,2})?\n?", fullmatch=True) | st.text(max_size=4))
def test_a_patterned_fields_schema_agrees_with_its_validator(value: str) -> None:
    pattern = Body.model_json_schema()["properties"]["price"]["pattern"]
    assert bool(re.search(pattern, value)) == _accepted("price", value)


@pytest.mark.parametrize("value", ["\ud800", "a\udfffb"])
def test_a_lone_surrogate_is_refused_though_the_pattern_cannot_say_so(value: str) -> None:
    assert not _accepted("any_line", value)
    assert not _accepted("note", value)
