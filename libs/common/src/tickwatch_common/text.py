"""Text a client sends, refused at the edge when it holds what no store or message can carry.

PostgreSQL refuses a NUL in ``text`` (the gateway answered 500), a lone surrogate cannot be
encoded as UTF-8, and other C0 controls and DEL have no place in a name, an e-mail address, a
symbol or an id. So every text from a client is one of:

- :data:`Text`: one line; no C0 control (tab and newline included), no DEL, no lone surrogate.
- :data:`MultilineText`: free text such as an alert's note; tab, newline and carriage return
  (a browser's line break is CR LF) are allowed, the rest is refused as in :data:`Text`.

Lengths go into ``CleanText(min_length=..., max_length=...)`` (pydantic's own messages);
``CleanText(pattern=...)`` also requires the whole value to match ``pattern``, read as a JSON
Schema tool reads it (Unicode classes: write ``[0-9]``, never ``\\d``, which matches every
Unicode digit, so ``"\\u0667\\u0660"`` would pass as 70). A refusal is a pydantic error at
the field, so a 422 names it. The JSON Schema carries the same rule as its ``pattern``, read in
Unicode mode as JSON Schema 2020-12 does; it ends in ``$(?!\\n)`` because a Python ``$`` also
matches before a final newline, and a fuzzer reading the schema with Python's ``re`` would
otherwise call ``"70000\\n"`` valid. The schema's pattern leaves out the lone-surrogate range:
JSON Schema validators (Rust's ``regex``, ECMA-262 in Unicode mode) read a pattern over Unicode
scalar values, where a surrogate cannot occur and ``\\ud800`` does not compile (a fuzzer then
drops the whole pattern and calls a control character valid); a JSON text holding one is not
interoperable (RFC 8259 §8.2), and the gateway still refuses it with a 422.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

LINE_CONTROLS = r"\x00-\x1f\x7f"
"""The control characters no one-line text may hold, as the inside of a regex character class."""
MULTILINE_CONTROLS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f"
"""The same for free text, which may hold tab, newline and carriage return."""
SURROGATES = r"\ud800-\udfff"
"""Lone surrogates: refused everywhere, but absent from the schema's pattern (see above)."""


@dataclass(frozen=True)
class CleanText:
    """``Annotated[str, CleanText(max_length=100)]``: a string within the lengths, without the
    excluded characters (and, with ``pattern``, matching the pattern in whole)."""

    multiline: bool = False
    pattern: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    _excluded: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _shape: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_excluded", re.compile(f"[{self._controls}{SURROGATES}]"))
        shape = None if self.pattern is None else re.compile(self.pattern)
        object.__setattr__(self, "_shape", shape)

    @property
    def _controls(self) -> str:
        return MULTILINE_CONTROLS if self.multiline else LINE_CONTROLS

    @property
    def schema_pattern(self) -> str:
        """The rule as a JSON Schema ``pattern``. A ``pattern`` of the caller's must itself
        refuse the control characters (the tests hold every published pattern to that)."""
        body = self.pattern if self.pattern is not None else f"[^{self._controls}]*"
        return f"^(?:{body})$(?!\\n)"

    def check(self, value: str) -> str:
        found = self._excluded.search(value)
        if found is not None:
            raise PydanticCustomError(
                "text_forbidden_character",
                "must not contain {character} (at position {position})",
                {"character": _name(found.group()), "position": found.start()},
            )
        if self._shape is not None and self._shape.fullmatch(value) is None:
            raise PydanticCustomError(
                "string_pattern_mismatch",
                "String should match pattern '{pattern}'",
                {"pattern": self.pattern},
            )
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        inner = core_schema.str_schema(min_length=self.min_length, max_length=self.max_length)
        return core_schema.no_info_after_validator_function(self.check, inner)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["pattern"] = self.schema_pattern
        return json_schema


def _name(character: str) -> str:
    code = ord(character)
    if code == 0:
        return "a NUL character"
    if 0xD800 <= code <= 0xDFFF:
        return f"a lone surrogate (U+{code:04X})"
    return f"a control character (U+{code:04X})"


Text = Annotated[str, CleanText()]
MultilineText = Annotated[str, CleanText(multiline=True)]
