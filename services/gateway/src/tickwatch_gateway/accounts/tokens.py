"""Credentials as data: access JWTs, opaque refresh tokens, API keys and password hashes.

Access tokens are HS256 JWTs with ``iss``, ``aud``, ``sub``, ``iat``, ``exp``, ``jti``,
``typ: "access"`` and ``sid``, the login (refresh-token family) they belong to, by which they
are revoked (:mod:`tickwatch_gateway.revocation`; tokens from before ``sid`` have none);
verification allows only HS256 and requires every one of those claims, so
``alg: none``, another algorithm, an expired, foreign or tampered token, and anything that is not
an access token are all refused. Refresh tokens and API keys are random and opaque; only their
SHA-256 is stored (they carry 256 bits of entropy, so a slow hash buys nothing and would cost a
hash per request for API keys). Passwords use argon2id with OWASP's parameters.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

ALGORITHM = "HS256"
ACCESS = "access"
OPS = "ops"
OPS_TOKEN_MAX_TTL_S = 300  # a stolen ops token is good for minutes, not for ever
SCOPES = ("read", "alerts:write", "portfolio:write")
API_KEY_PREFIX = "tw_"
LEEWAY_S = 5  # clock skew allowed on exp and iat

# OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1.
PASSWORDS = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@functools.cache
def _dummy_hash() -> str:
    """What a missing user's password is checked against (made on first use, not at import)."""
    return PASSWORDS.hash("not a real password, for constant-time misses")


class InvalidToken(Exception):
    """The token is not an access token we issued, or it is no longer valid."""


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    token_id: str
    expires_at: int
    session_id: str | None = None


VERIFIED_KEPT = 10_000
"""Access tokens whose verified claims are kept in process (then the copy starts afresh)."""


@dataclass(frozen=True)
class TokenIssuer:
    secret: str
    issuer: str
    audience: str
    ttl_s: int
    # A token verified once is the same string next time: its claims are kept until it expires
    # (with the same leeway), which spares the HMAC and the JSON of every later request (the
    # largest part of an authenticated request's own time). Only the exact string of a token
    # that passed is ever found here, so nothing unverified is admitted.
    _verified: dict[str, AccessClaims] = field(default_factory=dict, compare=False, repr=False)

    def issue(self, user_id: str, session_id: str, now: float | None = None) -> str:
        iat = int(time.time() if now is None else now)
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user_id,
            "iat": iat,
            "exp": iat + self.ttl_s,
            "jti": uuid.uuid4().hex,
            "typ": ACCESS,
            "sid": session_id,
        }
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM, headers={"typ": "JWT"})

    def _decode(self, token: str, require: list[str]) -> dict[str, Any]:
        """The claims of an HS256 token of ours with every claim in ``require``."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.secret,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": require},
                leeway=LEEWAY_S,
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        return claims

    def verify(self, token: str) -> AccessClaims:
        known = self._verified.get(token)
        if known is not None:
            if time.time() < known.expires_at + LEEWAY_S:  # as PyJWT judges exp
                return known
            del self._verified[token]
        verified = self._verify(token)
        if len(self._verified) >= VERIFIED_KEPT:
            self._verified.clear()
        self._verified[token] = verified
        return verified

    def _verify(self, token: str) -> AccessClaims:
        claims = self._decode(token, ["exp", "iat", "sub", "iss", "aud", "jti", "typ"])
        if claims.get("typ") != ACCESS:
            raise InvalidToken("not an access token")
        sub, sid = claims["sub"], claims.get("sid")
        if not isinstance(sub, str) or not sub:
            raise InvalidToken("bad subject")
        if sid is not None and (not isinstance(sid, str) or not sid):
            raise InvalidToken("bad session")
        return AccessClaims(sub, str(claims["jti"]), int(claims["exp"]), sid)

    def verify_ops(self, token: str) -> None:
        """Admit an operator's token (``typ: "ops"``, what ``python -m tickwatch_devstack
        reconcile`` signs with the same key) living at most ``OPS_TOKEN_MAX_TTL_S``; raise
        :class:`InvalidToken` otherwise. Users' access tokens are not ops tokens."""
        claims = self._decode(token, ["exp", "iat", "iss", "aud", "typ"])
        if claims.get("typ") != OPS:
            raise InvalidToken("not an ops token")
        if int(claims["exp"]) - int(claims["iat"]) > OPS_TOKEN_MAX_TTL_S:
            raise InvalidToken(f"an ops token lives at most {OPS_TOKEN_MAX_TTL_S} s")


def opaque_token() -> str:
    return secrets.token_urlsafe(32)


def new_api_key() -> tuple[str, str]:
    """(the key shown once, its public prefix for listing)."""
    prefix = secrets.token_hex(4)
    return f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}", prefix


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def hash_password(password: str) -> str:
    return PASSWORDS.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """True when ``password`` matches; a missing user costs the same time as a wrong password."""
    try:
        return PASSWORDS.verify(stored or _dummy_hash(), password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False
