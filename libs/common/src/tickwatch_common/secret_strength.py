"""Whether a signing key is strong enough to start with (``JWT_SECRET``, ``INTERNAL_API_SECRET``).

A key anyone can guess signs tokens for anyone, so a service refuses to start on one. The rule,
checked in this order on the key as given:

1. at least :data:`MIN_BYTES` (32) bytes of UTF-8;
2. not a placeholder: none of :data:`SHIPPED_DEFAULTS` (the defaults this repository ever
   shipped), and no placeholder word (:data:`PLACEHOLDER_WORDS`: ``changeme``, ``change-me``,
   ``secret``, ...) standing alone, i.e. not between two letters, in any case;
3. not repetitive: no period of at most half its length (``aaaa...``, ``abcabc...``,
   ``0123456789`` repeated);
4. at least :data:`MIN_DISTINCT` (6) distinct characters;
5. not a run: at most :data:`MAX_PREDICTABLE` (3/4) of its adjacent pairs repeat a character
   or step to the next or previous one (``abcdefghijklmnopqrstuvwxyz012345``).

A random token is refused only with a tiny probability (rules 3-5 computed exactly at 32
characters, rule 2 by a union bound): of 32 or more URL-safe
characters (``secrets.token_urlsafe(24)`` or longer, ``openssl rand -base64 48``) below 1e-8 up
to 200 characters, almost all of it rule 2's word ``secret`` turning up by chance (rules 3-5:
below 1e-18); of 32 or more hex digits (``openssl rand -hex 16``), which cannot spell it, below
1e-12. Pure, no I/O.
"""

from __future__ import annotations

import itertools
import re
from typing import Annotated

from pydantic import AfterValidator, SecretStr

MIN_BYTES = 32
MIN_DISTINCT = 6
MAX_PREDICTABLE = 0.75
SHIPPED_DEFAULTS = frozenset(
    {
        "compose-only-secret-change-me-0123456789abcdef",
        "compose-only-internal-secret-change-me-0123456789",
    }
)
"""Every default secret docker-compose.yml shipped (``git log -p -S compose-only``)."""
PLACEHOLDER_WORDS = (
    "changeme",
    "change-me",
    "change_me",
    "replaceme",
    "replace-me",
    "replace_me",
    "secret",
    "password",
)
_PLACEHOLDER = re.compile(
    r"(?<![a-z])(" + "|".join(re.escape(w) for w in PLACEHOLDER_WORDS) + r")(?![a-z])",
    re.IGNORECASE,
)


def weakness(secret: str) -> str | None:
    """Why ``secret`` is too weak to sign with (one phrase), or None when it is strong."""
    size = len(secret.encode())
    if size < MIN_BYTES:
        return f"is {size} bytes; at least {MIN_BYTES} are required"
    if secret in SHIPPED_DEFAULTS:
        return "is a default this repository shipped"
    placeholder = _PLACEHOLDER.search(secret)
    if placeholder is not None:
        return f"contains the placeholder word {placeholder.group(1).lower()!r}"
    period = _period(secret)
    if period <= len(secret) // 2:
        return f"is its first {period} character{'s' if period > 1 else ''} repeated"
    distinct = len(set(secret))
    if distinct < MIN_DISTINCT:
        return f"has {distinct} distinct characters; at least {MIN_DISTINCT} are required"
    if _predictable_share(secret) > MAX_PREDICTABLE:
        return "is mostly a run of repeated or consecutive characters"
    return None


def _period(text: str) -> int:
    """The smallest p with text[i] == text[i + p] for every i: the length less its longest
    border (a proper prefix that is also a suffix), from the KMP failure function."""
    border = [0] * len(text)
    for i in range(1, len(text)):
        k = border[i - 1]
        while k and text[i] != text[k]:
            k = border[k - 1]
        border[i] = k + (text[i] == text[k])
    return len(text) - border[-1]


def _predictable_share(text: str) -> float:
    """The share of adjacent pairs that repeat a character or step by one code point."""
    pairs = list(itertools.pairwise(text))
    return sum(abs(ord(a) - ord(b)) <= 1 for a, b in pairs) / len(pairs)


def _strong(value: SecretStr) -> SecretStr:
    why = weakness(value.get_secret_value())
    if why is not None:
        raise ValueError(f"the key {why} (make one with: openssl rand -base64 48)")
    return value


StrongSecret = Annotated[SecretStr, AfterValidator(_strong)]
"""A settings field's type for a signing key: refused at start-up by :func:`weakness`."""
