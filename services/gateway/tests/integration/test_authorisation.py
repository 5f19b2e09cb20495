"""Who may call what: every private route without, with bad, with another user's credentials."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient

from .conftest import JWT_SECRET, signup

Client = TestClient[Any, Any]

PRIVATE = [
    ("GET", "/api/v1/auth/me"),
    ("POST", "/api/v1/auth/logout"),
    ("GET", "/api/v1/api-keys"),
    ("POST", "/api/v1/api-keys"),
    ("DELETE", "/api/v1/api-keys/00000000-0000-0000-0000-000000000000"),
]


def forged(**claims: Any) -> dict[str, str]:
    now = int(time.time())
    body = {
        "iss": "tickwatch",
        "aud": "tickwatch-api",
        "sub": "x",
        "iat": now,
        "exp": now + 60,
        "jti": "j",
        "typ": "access",
        **claims,
    }
    key = claims.pop("_key", JWT_SECRET)
    return {"Authorization": f"Bearer {jwt.encode(body, key, algorithm='HS256')}"}


@pytest.mark.parametrize(("method", "path"), PRIVATE)
async def test_private_routes_need_credentials(client: Client, method: str, path: str) -> None:
    resp = await client.request(method, path, json={"name": "k"})
    assert resp.status == 401
    assert resp.content_type == "application/problem+json"
    assert "RateLimit-Remaining" in resp.headers


async def test_jwt_attacks_are_401_never_500(client: Client) -> None:
    user = await signup(client)
    header, payload, signature = user["access_token"].split(".")
    attacks = {
        "alg none": {
            "Authorization": "Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + payload + "."
        },
        "expired": forged(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
        "wrong key": {
            "Authorization": "Bearer "
            + jwt.encode({"sub": "x", "typ": "access"}, "k" * 40, algorithm="HS256")
        },
        "refresh as access": {"Authorization": f"Bearer {user['refresh_token']}"},
        "tampered": {"Authorization": f"Bearer {header}.{payload[:-4]}AAAA.{signature}"},
        "garbage": {"Authorization": "Bearer not.a.jwt"},
        "basic scheme": {"Authorization": "Basic dXNlcjpwYXNz"},
        "bad api key": {"X-API-Key": "tw_deadbeef_nope"},
    }
    for name, headers in attacks.items():
        resp = await client.get("/api/v1/auth/me", headers=headers)
        assert resp.status == 401, name
        assert resp.content_type == "application/problem+json", name


async def test_api_key_is_shown_once_scoped_and_owned(client: Client) -> None:
    alice, bob = await signup(client), await signup(client)
    resp = await client.post(
        "/api/v1/api-keys", json={"name": "bot", "scopes": ["read"]}, headers=alice["headers"]
    )
    assert resp.status == 201
    created = await resp.json()
    assert created["key"].startswith("tw_")

    listed = await (await client.get("/api/v1/api-keys", headers=alice["headers"])).json()
    assert [k["id"] for k in listed["items"]] == [created["id"]]
    assert "key" not in listed["items"][0]
    bob_list = await (await client.get("/api/v1/api-keys", headers=bob["headers"])).json()
    assert bob_list["items"] == []

    key_headers = {"X-API-Key": created["key"]}
    me = await client.get("/api/v1/auth/me", headers=key_headers)
    assert me.status == 200
    assert (await me.json())["email"] == alice["email"]
    # A key cannot mint keys or log out: those need the user's own access token.
    assert (await client.get("/api/v1/api-keys", headers=key_headers)).status == 403
    assert (await client.post("/api/v1/auth/logout", headers=key_headers)).status == 403

    # Bob cannot revoke Alice's key: it does not exist for him.
    resp = await client.delete(f"/api/v1/api-keys/{created['id']}", headers=bob["headers"])
    assert resp.status == 404
    assert (await client.get("/api/v1/auth/me", headers=key_headers)).status == 200

    resp = await client.delete(f"/api/v1/api-keys/{created['id']}", headers=alice["headers"])
    assert resp.status == 204
    assert (await client.get("/api/v1/auth/me", headers=key_headers)).status == 401


async def test_a_key_without_the_read_scope_cannot_read(client: Client) -> None:
    user = await signup(client)
    resp = await client.post(
        "/api/v1/api-keys", json={"name": "w", "scopes": ["alerts:write"]}, headers=user["headers"]
    )
    key = (await resp.json())["key"]
    resp = await client.get("/api/v1/auth/me", headers={"X-API-Key": key})
    assert resp.status == 403
