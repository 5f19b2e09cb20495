"""The gateway -> service call credential: a signed call verifies; anything changed does not."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from tickwatch_common.internal_auth import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    USER_HEADER,
    InvalidCredential,
    sign,
    verify,
)

SECRET = SecretStr("K_MJOPH9ngBgr3mPZwtqTxnuhgek6MXsAcH8AnkIAaimtHlg")
NOW = 1_760_000_000.0
BODY = b'{"symbol":"BTC-USDT","side":"buy","quantity":"0.01"}'


def signed() -> dict[str, str]:
    return sign(SECRET, "POST", "/internal/orders?x=1", "user-1", BODY, now=NOW)


def test_a_signed_call_verifies_to_its_user() -> None:
    assert verify(SECRET, "post", "/internal/orders?x=1", signed(), BODY, now=NOW + 5) == "user-1"


def test_missing_headers_are_refused() -> None:
    with pytest.raises(InvalidCredential, match="missing"):
        verify(SECRET, "POST", "/internal/orders?x=1", {}, BODY, now=NOW)


def test_a_forged_signature_is_refused() -> None:
    forged = sign(
        "another-secret-of-enough-length-0123456789",
        "POST",
        "/internal/orders?x=1",
        "user-1",
        BODY,
        now=NOW,
    )
    with pytest.raises(InvalidCredential, match="signature"):
        verify(SECRET, "POST", "/internal/orders?x=1", forged, BODY, now=NOW)


@pytest.mark.parametrize("skew", [31, -31, 3600])
def test_a_replay_outside_the_skew_is_refused(skew: int) -> None:
    with pytest.raises(InvalidCredential, match="skew"):
        verify(SECRET, "POST", "/internal/orders?x=1", signed(), BODY, now=NOW + skew)


def test_a_call_at_the_skew_edge_still_verifies() -> None:
    assert verify(SECRET, "POST", "/internal/orders?x=1", signed(), BODY, now=NOW + 30) == "user-1"


def test_another_body_is_refused() -> None:
    with pytest.raises(InvalidCredential, match="signature"):
        verify(SECRET, "POST", "/internal/orders?x=1", signed(), BODY + b" ", now=NOW)


@pytest.mark.parametrize(
    "path", ["/internal/withdrawals?x=1", "/internal/orders?x=2", "/internal/orders"]
)
def test_another_path_or_query_is_refused(path: str) -> None:
    with pytest.raises(InvalidCredential, match="signature"):
        verify(SECRET, "POST", path, signed(), BODY, now=NOW)


def test_another_method_is_refused() -> None:
    with pytest.raises(InvalidCredential, match="signature"):
        verify(SECRET, "PUT", "/internal/orders?x=1", signed(), BODY, now=NOW)


def test_another_user_is_refused() -> None:
    headers = {**signed(), USER_HEADER: "user-2"}
    with pytest.raises(InvalidCredential, match="signature"):
        verify(SECRET, "POST", "/internal/orders?x=1", headers, BODY, now=NOW)


def test_a_moved_timestamp_is_refused() -> None:
    headers = {**signed(), TIMESTAMP_HEADER: str(int(NOW) + 1)}
    with pytest.raises(InvalidCredential, match="signature"):
        verify(SECRET, "POST", "/internal/orders?x=1", headers, BODY, now=NOW)


@pytest.mark.parametrize("stamp", ["", "abc", "-5", "1e9", "١٧٦٠٠٠٠٠٠٠"])
def test_a_malformed_timestamp_is_refused(stamp: str) -> None:
    headers = {**signed(), TIMESTAMP_HEADER: stamp}
    with pytest.raises(InvalidCredential):
        verify(SECRET, "POST", "/internal/orders?x=1", headers, BODY, now=NOW)


def test_a_signature_without_its_scheme_is_refused() -> None:
    headers = {**signed()}
    headers[SIGNATURE_HEADER] = headers[SIGNATURE_HEADER].removeprefix("v1=")
    with pytest.raises(InvalidCredential, match="signature"):
        verify(SECRET, "POST", "/internal/orders?x=1", headers, BODY, now=NOW)


def test_a_multi_line_user_cannot_be_signed() -> None:
    with pytest.raises(ValueError):
        sign(SECRET, "GET", "/internal/portfolio", "a\nb", now=NOW)
