"""Who is calling, and how much they may: admission (run by the edge middleware) and the route
guards.

:func:`admit` authenticates ``Authorization: Bearer <access JWT>`` or ``X-API-Key``, picks the
rate-limit identity (API key, else user, else client IP; login/register/refresh always by IP on
their stricter budget), counts the request, and adds ``RateLimit-*`` headers to every answer,
errors included. Handlers then call :func:`require` with what the operation needs; the owner of
anything is always ``principal.user_id``, the token's subject. An access token whose login was
revoked (logout, refresh-token reuse) is refused like an invalid one; only requests that carry
a bearer token pay for that check (:mod:`tickwatch_gateway.revocation`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from tickwatch_gateway.accounts.keys import ACCOUNTS, REVOCATIONS, TOKENS
from tickwatch_gateway.accounts.revocation import RevocationUnknown
from tickwatch_gateway.accounts.tokens import API_KEY_PREFIX, SCOPES, AccessClaims, InvalidToken
from tickwatch_gateway.http.keys import LIMITER
from tickwatch_gateway.http.problems import ProblemError
from tickwatch_gateway.http.ratelimit import Decision

PRINCIPAL = web.RequestKey("principal", object)
AUTH_BUDGET_PATHS = frozenset(
    {"/api/v1/auth/login", "/api/v1/auth/register", "/api/v1/auth/refresh"}
)
GUARDED_PREFIXES = ("/api/", "/ws")


@dataclass(frozen=True)
class Principal:
    user_id: str
    scopes: frozenset[str]
    via: Literal["jwt", "api_key"]
    key_id: str | None = None
    session_id: str | None = None  # the login of an access token
    expires_at: int | None = None  # an access token's expiry (epoch seconds)

    @property
    def identity(self) -> str:
        return f"key:{self.key_id}" if self.key_id else f"user:{self.user_id}"


def unauthorized(detail: str) -> ProblemError:
    return ProblemError(401, detail, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


async def verify_access(app: web.Application, token: str) -> AccessClaims:
    """The claims of a valid access token whose login is not revoked; else a 401 problem
    (a 503 when whether it is revoked cannot be told)."""
    try:
        claims = app[TOKENS].verify(token)
    except InvalidToken as exc:
        raise unauthorized(f"invalid access token: {exc}") from None
    if claims.session_id is not None:
        try:
            revoked = await app[REVOCATIONS].is_revoked(claims.session_id)
        except RevocationUnknown:
            raise ProblemError(
                503, "cannot check the access token now; retry", headers={"Retry-After": "1"}
            ) from None
        if revoked:
            raise unauthorized("access token revoked: its login was logged out")
    return claims


async def authenticate(request: web.Request) -> Principal | None:
    authorization = request.headers.get("Authorization")
    api_key = request.headers.get("X-API-Key")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("Authorization must be 'Bearer <access token>'")
        claims = await verify_access(request.app, token.strip())
        return Principal(
            claims.user_id,
            frozenset(SCOPES),
            "jwt",
            session_id=claims.session_id,
            expires_at=claims.expires_at,
        )
    if api_key is not None:
        key = None
        if api_key.startswith(API_KEY_PREFIX) and len(api_key) < 200:
            key = await request.app[ACCOUNTS].api_key(api_key)
        if key is None:
            raise unauthorized("invalid or revoked API key")
        return Principal(key.user_id, frozenset(key.scopes), "api_key", key.id)
    return None


async def admit(request: web.Request) -> Decision | None:
    """Authenticate and count a request to a guarded path; its rate-limit decision, whose
    headers the edge middleware puts on the answer. Raises the 401 or 429 problem (carrying
    the ``RateLimit-*`` headers) for a request that may not go on; None for unguarded paths."""
    if not request.path.startswith(GUARDED_PREFIXES):
        return None
    failure: ProblemError | None = None
    principal: Principal | None = None
    try:
        principal = await authenticate(request)
    except ProblemError as exc:
        failure = exc
    ip = request.remote or "unknown"
    if request.path in AUTH_BUDGET_PATHS:
        budget, identity = "auth", f"ip:{ip}"
    else:
        budget, identity = "default", principal.identity if principal else f"ip:{ip}"
    limiter = request.app[LIMITER]
    decision = limiter.hit_known(budget, identity) or await limiter.hit(budget, identity)
    if not decision.allowed:
        raise ProblemError(
            429,
            f"rate limit of {decision.limit} requests exceeded; retry in {decision.reset_s}s",
            headers=decision.headers(),
        )
    if failure is not None:
        decision.apply(failure.headers)
        raise failure
    request[PRINCIPAL] = principal
    return decision


def require(request: web.Request, *, scope: str | None = None, jwt_only: bool = False) -> Principal:
    principal = request.get(PRINCIPAL)
    if not isinstance(principal, Principal):
        raise unauthorized("credentials required: Authorization: Bearer <token> or X-API-Key")
    if jwt_only and principal.via != "jwt":
        raise ProblemError(403, "this operation needs a user's access token, not an API key")
    if scope is not None and scope not in principal.scopes:
        raise ProblemError(403, f"this API key lacks the {scope!r} scope")
    return principal


def require_ops(request: web.Request) -> None:
    """An operator's call: a bearer JWT with ``typ: "ops"`` signed with ``JWT_SECRET`` (short
    lived); users' access tokens and API keys are refused."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ProblemError(401, "an ops token is required", headers={"WWW-Authenticate": "Bearer"})
    try:
        request.app[TOKENS].verify_ops(token.strip())
    except InvalidToken as exc:
        raise ProblemError(
            403, f"not an ops token: {exc}", headers={"WWW-Authenticate": "Bearer"}
        ) from None
