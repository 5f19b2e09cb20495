"""A signing key anyone could guess stops the service at start-up, naming the setting; a random
token always starts it."""

from __future__ import annotations

import base64
import os
import secrets

import pytest
from tickwatch_common.internal_auth import InternalApiSettings
from tickwatch_common.secret_strength import SHIPPED_DEFAULTS, weakness
from tickwatch_common.settings import load_settings

STRONG = "Jq3v9X-kR2mZt7WbY_cN4pLd8sHf0GaE1uKx6oVi5wTn"


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("a" * 31, "is 31 bytes; at least 32 are required"),
        ("é" * 15 + "x", "is 31 bytes"),  # bytes, not characters
        ("a" * 32, "is its first 1 character repeated"),
        ("abc" * 11, "is its first 3 characters repeated"),
        ("0123456789" * 4, "is its first 10 characters repeated"),
        ("0123456789abcdef" * 2, "is its first 16 characters repeated"),
        (secrets.token_hex(16) * 2, "is its first 32 characters repeated"),
        ("a" * 31 + "b", "has 2 distinct characters; at least 6 are required"),
        ("abcdefghijklmnopqrstuvwxyz012345", "is mostly a run"),
        ("0123456789abcdefghijklmnopqrstuv", "is mostly a run"),
        ("compose-only-secret-change-me-0123456789abcdef", "is a default this repository shipped"),
        (
            "my-super-SECRET-key-that-nobody-will-ever-guess",
            "contains the placeholder word 'secret'",
        ),
        (
            "please_change_me_before_going_to_production",
            "contains the placeholder word 'change_me'",
        ),
        ("ChangeMe-" + STRONG, "contains the placeholder word 'changeme'"),
        ("password:" + STRONG, "contains the placeholder word 'password'"),
    ],
)
def test_a_guessable_key_is_refused_saying_why(secret: str, why: str) -> None:
    found = weakness(secret)
    assert found is not None and found.startswith(why), found


def test_every_default_the_repository_shipped_is_refused() -> None:
    for default in SHIPPED_DEFAULTS:
        assert weakness(default) is not None


def test_a_placeholder_word_inside_a_longer_word_is_no_placeholder() -> None:
    assert weakness("Secretariat" + STRONG) is None
    assert weakness(STRONG + "passwordless") is None


def test_random_tokens_of_32_or_more_url_safe_characters_pass() -> None:
    # The module's docstring bounds a refusal's chance below 1e-8: none of these is refused.
    tokens = [secrets.token_urlsafe(n) for n in (24, 32, 48, 96) for _ in range(2000)]
    tokens += [secrets.token_hex(n) for n in (16, 32) for _ in range(2000)]
    tokens += [base64.b64encode(os.urandom(48)).decode() for _ in range(2000)]
    assert [t for t in tokens if weakness(t) is not None] == []


def test_a_weak_key_stops_the_service_naming_the_setting(monkeypatch, capsys) -> None:
    monkeypatch.chdir("/")  # no .env here
    monkeypatch.setenv("INTERNAL_API_SECRET", "a" * 32)
    with pytest.raises(SystemExit) as exc:
        load_settings(InternalApiSettings)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.endswith(
        "cannot start: invalid setting INTERNAL_API_SECRET: the key is its first 1 character"
        " repeated (make one with: openssl rand -base64 48)"
    )


def test_a_strong_key_starts_it(monkeypatch) -> None:
    monkeypatch.chdir("/")
    monkeypatch.setenv("INTERNAL_API_SECRET", STRONG)
    settings = load_settings(InternalApiSettings)
    assert settings.internal_api_secret.get_secret_value() == STRONG
