"""Access-token verification refuses every forgery and misuse we know of."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from tickwatch_gateway.accounts.tokens import (
    InvalidToken,
    TokenIssuer,
    hash_password,
    verify_password,
)

SECRET = "b50GlE5N1MEx1vy9uBHM1ftOpH2zIkFWcLTLgca8cbcect05"
ISSUER = TokenIssuer(SECRET, "tickwatch", "tickwatch-api", 900)


def claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "iss": "tickwatch",
        "aud": "tickwatch-api",
        "sub": "user-1",
        "iat": now,
        "exp": now + 60,
        "jti": "j",
        "typ": "access",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_a_fresh_token_verifies_to_its_subject_and_login() -> None:
    claims = ISSUER.verify(ISSUER.issue("user-1", "login-1"))
    assert (claims.user_id, claims.session_id) == ("user-1", "login-1")


def test_a_token_from_before_logins_had_ids_still_verifies() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert ISSUER.verify(token).session_id is None


def test_alg_none_is_refused() -> None:
    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}."
    with pytest.raises(InvalidToken):
        ISSUER.verify(token)


def test_expired_token_is_refused() -> None:
    token = ISSUER.issue("user-1", "login-1", now=time.time() - 3600)
    with pytest.raises(InvalidToken, match="expired"):
        ISSUER.verify(token)


def test_token_signed_with_another_key_is_refused() -> None:
    token = jwt.encode(
        claims(),
        "another-secret-0123456789-abcdefghijkl-0123456789-abcdefghij-xyz",
        algorithm="HS256",
    )
    with pytest.raises(InvalidToken):
        ISSUER.verify(token)


def test_tampered_payload_is_refused() -> None:
    header, _, signature = ISSUER.issue("user-1", "login-1").split(".")
    forged = f"{header}.{b64(claims(sub='admin'))}.{signature}"
    with pytest.raises(InvalidToken):
        ISSUER.verify(forged)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_other_algorithms_are_refused_even_with_the_right_key() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS512")
    with pytest.raises(InvalidToken):
        ISSUER.verify(token)


@pytest.mark.parametrize(
    "bad",
    [
        {"typ": "refresh"},
        {"typ": None},
        {"aud": "someone-else"},
        {"iss": "someone-else"},
        {"sub": None},
        {"exp": None},
        {"iat": None},
        {"iat": int(time.time()) + 3600, "exp": int(time.time()) + 7200},
        {"sid": ""},
        {"sid": 42},
    ],
)
def test_wrong_or_missing_claims_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidToken):
        ISSUER.verify(jwt.encode(claims(**bad), SECRET, algorithm="HS256"))


def test_an_opaque_refresh_token_is_not_an_access_token() -> None:
    with pytest.raises(InvalidToken):
        ISSUER.verify("b2pYbGxqZ2tqZ2tqZ2tqZ2tqZ2tqZ2tqZ2tqZ2tqZ2s")


def test_passwords_verify_only_themselves() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "correct horse")
    assert not verify_password(stored, "wrong horse")
    assert not verify_password(None, "correct horse")


def test_an_ops_token_from_devstack_is_admitted_and_access_tokens_are_not() -> None:
    from tickwatch_devstack.reconcile import ops_token

    ISSUER.verify_ops(ops_token(SECRET, "tickwatch", "tickwatch-api"))
    with pytest.raises(InvalidToken, match="not an ops token"):
        ISSUER.verify_ops(ISSUER.issue("user-1", "login-1"))
    with pytest.raises(InvalidToken):
        ISSUER.verify_ops(
            ops_token("another-secret-0123456789-abcdefghijkl", "tickwatch", "tickwatch-api")
        )
    with pytest.raises(InvalidToken):  # expired
        ISSUER.verify_ops(ops_token(SECRET, "tickwatch", "tickwatch-api", now=time.time() - 600))
    with pytest.raises(InvalidToken):  # an access token is never an ops token either way
        ISSUER.verify(ops_token(SECRET, "tickwatch", "tickwatch-api"))


def test_a_long_lived_ops_token_is_refused() -> None:
    now = int(time.time())
    token = jwt.encode(claims(typ="ops", iat=now, exp=now + 3600), SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken, match="at most"):
        ISSUER.verify_ops(token)
