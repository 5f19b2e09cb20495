"""Accounts: register, login, refresh (rotating, with reuse detection), logout, me."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from tickwatch_common.text import CleanText

from tickwatch_gateway.accounts.admission import require, unauthorized
from tickwatch_gateway.accounts.keys import ACCOUNT_SETTINGS, ACCOUNTS, REVOCATIONS, TOKENS
from tickwatch_gateway.accounts.store import EmailTaken, RefreshRejected, User
from tickwatch_gateway.accounts.tokens import hash_password, verify_password
from tickwatch_gateway.http.openapi import Api
from tickwatch_gateway.http.problems import ProblemError, parse_body

# One part of an address: no "@", no white space, no control character (so the published
# pattern refuses what CleanText refuses, and a fuzzer reading it agrees with the check).
_PART = r"[^@\s\x00-\x1f\x7f]+"
Email = Annotated[str, CleanText(max_length=254, pattern=rf"^{_PART}@{_PART}\.{_PART}$")]
# Any character a keyboard can type, tab and line breaks included (what no string can hold is
# still refused: NUL, lone surrogates).
Password = Annotated[str, CleanText(min_length=8, max_length=256, multiline=True)]


class RegisterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    password: Password
    name: Annotated[str, CleanText(max_length=100)] | None = None


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    password: Annotated[str, CleanText(max_length=256, multiline=True)]


class RefreshBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: Annotated[str, CleanText(min_length=1, max_length=200)]


class LogoutBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: Annotated[str, CleanText(max_length=200)] | None = Field(
        default=None,
        description="Also revoke this login; every login of the user when absent"
        " (the caller's own login is always revoked)",
    )


class UserOut(BaseModel):
    id: str
    email: str
    name: str | None
    created_at: str


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


def user_json(user: User) -> dict[str, object]:
    created = user.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"id": user.id, "email": user.email, "name": user.name, "created_at": created}


async def _pair(
    request: web.Request, user_id: str, refresh_token: str, login_id: str
) -> web.Response:
    settings = request.app[ACCOUNT_SETTINGS]
    return web.json_response(
        {
            "access_token": request.app[TOKENS].issue(user_id, login_id),
            "refresh_token": refresh_token,
            "token_type": "bearer",
            "expires_in": settings.access_token_ttl_s,
        },
        headers={"Cache-Control": "no-store"},
    )


async def register_user(request: web.Request) -> web.Response:
    body = await parse_body(request, RegisterBody)
    password_hash = await asyncio.to_thread(hash_password, body.password)
    try:
        user = await request.app[ACCOUNTS].create_user(body.email, body.name, password_hash)
    except EmailTaken:
        raise ProblemError(409, "an account with this email already exists") from None
    return web.json_response(user_json(user), status=201)


async def login(request: web.Request) -> web.Response:
    body = await parse_body(request, LoginBody)
    accounts = request.app[ACCOUNTS]
    found = await accounts.credentials(body.email)
    stored = found[1] if found else None
    if not await asyncio.to_thread(verify_password, stored, body.password) or found is None:
        raise unauthorized("wrong email or password")
    user = found[0]
    refresh_token, login_id = await accounts.start_login(user.id)
    return await _pair(request, user.id, refresh_token, login_id)


async def refresh(request: web.Request) -> web.Response:
    body = await parse_body(request, RefreshBody)
    try:
        user_id, successor, login_id = await request.app[ACCOUNTS].rotate_refresh(
            body.refresh_token
        )
    except RefreshRejected as exc:
        if exc.revoked_login is not None:
            await request.app[REVOCATIONS].revoke([exc.revoked_login])
        raise unauthorized(exc.reason) from None
    return await _pair(request, user_id, successor, login_id)


async def logout(request: web.Request) -> web.Response:
    """Ends the caller's own login (its access token is refused from now on) and the login of
    ``refresh_token``, or, without one, every login of the user."""
    principal = require(request, jwt_only=True)
    body = LogoutBody()
    if request.can_read_body:
        body = await parse_body(request, LogoutBody)
    accounts = request.app[ACCOUNTS]
    logins = {principal.session_id} if principal.session_id else set()
    if body.refresh_token:
        named = await accounts.login_of(principal.user_id, body.refresh_token)
        logins |= {named} if named else set()
        await accounts.revoke_logins(principal.user_id, sorted(logins))
    else:
        logins |= set(await accounts.revoke_all(principal.user_id))
    await request.app[REVOCATIONS].revoke(logins)
    return web.Response(status=204)


async def me(request: web.Request) -> web.Response:
    principal = require(request, scope="read")
    user = await request.app[ACCOUNTS].user(principal.user_id)
    if user is None:
        raise unauthorized("the account of this token no longer exists")
    return web.json_response(user_json(user))


def register(api: Api) -> None:
    api.add(
        "POST",
        "/auth/register",
        register_user,
        summary="Create an account",
        tag="auth",
        body=RegisterBody,
        response=UserOut,
        status=201,
    )
    api.add(
        "POST",
        "/auth/login",
        login,
        summary="Log in: access and refresh tokens",
        tag="auth",
        body=LoginBody,
        response=TokenPair,
    )
    api.add(
        "POST",
        "/auth/refresh",
        refresh,
        summary="Trade a refresh token for new tokens",
        tag="auth",
        body=RefreshBody,
        response=TokenPair,
    )
    api.add(
        "POST",
        "/auth/logout",
        logout,
        summary="Log out: revoke this login (or every login) and its access tokens",
        tag="auth",
        body=LogoutBody,
        body_optional=True,
        status=204,
        auth="jwt",
    )
    api.add(
        "GET",
        "/auth/me",
        me,
        summary="The calling user",
        tag="auth",
        response=UserOut,
        auth="user",
        scope="read",
    )
