"""Accounts against the real database: register, login, rotating refresh, reuse, logout, me."""

from __future__ import annotations

from typing import Any

import jwt
from aiohttp.test_utils import TestClient

from .conftest import JWT_SECRET, signup

Client = TestClient[Any, Any]


async def test_register_login_and_me(client: Client) -> None:
    user = await signup(client)
    assert user["token_type"] == "bearer"
    assert user["expires_in"] == 900
    resp = await client.get("/api/v1/auth/me", headers=user["headers"])
    assert resp.status == 200
    me = await resp.json()
    assert me["email"] == user["email"]
    assert me["created_at"].endswith("Z")
    assert (
        jwt.decode(
            user["access_token"], JWT_SECRET, algorithms=["HS256"], audience="tickwatch-api"
        )["sub"]
        == me["id"]
    )


async def test_duplicate_email_is_a_conflict(client: Client) -> None:
    user = await signup(client)
    resp = await client.post(
        "/api/v1/auth/register", json={"email": user["email"].upper(), "password": "another-pass"}
    )
    assert resp.status == 409
    assert resp.content_type == "application/problem+json"


async def test_wrong_password_and_unknown_email_answer_the_same_401(client: Client) -> None:
    user = await signup(client)
    wrong = await client.post(
        "/api/v1/auth/login", json={"email": user["email"], "password": "not-the-password"}
    )
    unknown = await client.post(
        "/api/v1/auth/login", json={"email": "nobody@example.com", "password": "whatever-pass"}
    )
    assert wrong.status == unknown.status == 401
    assert (await wrong.json())["detail"] == (await unknown.json())["detail"]


async def test_refresh_rotates_and_reuse_revokes_the_family(client: Client) -> None:
    user = await signup(client)
    first = user["refresh_token"]
    resp = await client.post("/api/v1/auth/refresh", json={"refresh_token": first})
    assert resp.status == 200
    second = (await resp.json())["refresh_token"]
    assert second != first

    reused = await client.post("/api/v1/auth/refresh", json={"refresh_token": first})
    assert reused.status == 401
    assert "reused" in (await reused.json())["detail"]
    # The successor was revoked with the family.
    resp = await client.post("/api/v1/auth/refresh", json={"refresh_token": second})
    assert resp.status == 401


async def test_logout_revokes_the_refresh_token(client: Client) -> None:
    user = await signup(client)
    resp = await client.post(
        "/api/v1/auth/logout",
        json={"refresh_token": user["refresh_token"]},
        headers=user["headers"],
    )
    assert resp.status == 204
    resp = await client.post("/api/v1/auth/refresh", json={"refresh_token": user["refresh_token"]})
    assert resp.status == 401


async def test_logout_of_another_users_token_does_nothing_to_it(client: Client) -> None:
    alice, bob = await signup(client), await signup(client)
    resp = await client.post(
        "/api/v1/auth/logout",
        json={"refresh_token": bob["refresh_token"]},
        headers=alice["headers"],
    )
    assert resp.status == 204
    resp = await client.post("/api/v1/auth/refresh", json={"refresh_token": bob["refresh_token"]})
    assert resp.status == 200
