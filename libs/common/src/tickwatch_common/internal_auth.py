"""The credential on every call from the gateway to a service's internal HTTP API.

The gateway has already authenticated the user; it tells the service *which* user with
``X-Tickwatch-User`` and proves the call is its own with an HMAC-SHA256, under the shared
``INTERNAL_API_SECRET``, over the method, the path with its query, that user, a timestamp and a
SHA-256 of the body. So a caller without the secret cannot act as anyone, and a signed call
cannot be re-aimed: another path, body or user breaks the signature, and a replay older than
:data:`MAX_SKEW_S` is refused. Pure functions, no I/O; the comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from pydantic import Field, SecretStr

from tickwatch_common.secret_strength import StrongSecret
from tickwatch_common.settings import BaseServiceSettings

USER_HEADER = "X-Tickwatch-User"
TIMESTAMP_HEADER = "X-Tickwatch-Timestamp"
SIGNATURE_HEADER = "X-Tickwatch-Signature"
SCHEME = "v1="
MAX_SKEW_S = 30
"""A call stamped further than this from the verifier's clock (either way) is refused."""


class InternalApiSettings(BaseServiceSettings):
    internal_api_secret: StrongSecret = Field(
        description="The HMAC key the gateway signs internal calls with: 32+ bytes, no default"
        " or low-entropy key (tickwatch_common.secret_strength)"
    )


class InvalidCredential(Exception):
    """The call carries no valid internal credential (the API's 401); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _secret_bytes(secret: SecretStr | str | bytes) -> bytes:
    if isinstance(secret, SecretStr):
        secret = secret.get_secret_value()
    return secret.encode() if isinstance(secret, str) else secret


def signature(
    secret: SecretStr | str | bytes,
    method: str,
    path_qs: str,
    user_id: str,
    timestamp: int,
    body: bytes,
) -> str:
    """The hex HMAC over the canonical text: one field a line, the body as its SHA-256."""
    canonical = "\n".join(
        [method.upper(), path_qs, user_id, str(timestamp), hashlib.sha256(body).hexdigest()]
    )
    return hmac.new(_secret_bytes(secret), canonical.encode(), hashlib.sha256).hexdigest()


def sign(
    secret: SecretStr | str | bytes,
    method: str,
    path_qs: str,
    user_id: str,
    body: bytes = b"",
    *,
    now: float | None = None,
) -> dict[str, str]:
    """The headers to add to a call made for ``user_id`` (``now``: epoch seconds, for tests)."""
    if not user_id or "\n" in user_id:
        raise ValueError("user_id must be a non-empty single line")
    timestamp = int(time.time() if now is None else now)
    return {
        USER_HEADER: user_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: SCHEME + signature(secret, method, path_qs, user_id, timestamp, body),
    }


def verify(
    secret: SecretStr | str | bytes,
    method: str,
    path_qs: str,
    headers: Mapping[str, str],
    body: bytes = b"",
    *,
    now: float | None = None,
    max_skew_s: int = MAX_SKEW_S,
) -> str:
    """The user the call is made for, or :class:`InvalidCredential`. ``headers`` is looked up
    by the exact names above (aiohttp's CIMultiDict matches them case-insensitively)."""
    user_id = headers.get(USER_HEADER)
    stamp = headers.get(TIMESTAMP_HEADER)
    given = headers.get(SIGNATURE_HEADER)
    if not user_id or not stamp or not given:
        raise InvalidCredential("missing internal credential")
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        raise InvalidCredential("malformed timestamp")
    timestamp = int(stamp)
    current = time.time() if now is None else now
    if abs(current - timestamp) > max_skew_s:
        raise InvalidCredential("timestamp outside the allowed clock skew")
    expected = SCHEME + signature(secret, method, path_qs, user_id, timestamp, body)
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise InvalidCredential("bad signature")
    return user_id
