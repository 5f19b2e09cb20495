"""API keys for integrations: created (and shown) once, listed without the secret, revoked."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from tickwatch_common.text import CleanText

from tickwatch_gateway.accounts.admission import require
from tickwatch_gateway.accounts.keys import ACCOUNTS
from tickwatch_gateway.accounts.store import ApiKey
from tickwatch_gateway.http.openapi import Api
from tickwatch_gateway.http.problems import ProblemError, parse_body

Scope = Literal["read", "alerts:write", "portfolio:write"]


class CreateKeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, CleanText(min_length=1, max_length=100)]
    scopes: list[Scope] = Field(default=["read"], min_length=1, max_length=3)


class KeyOut(BaseModel):
    id: str
    name: str
    prefix: str
    scopes: list[Scope]
    created_at: str
    last_used_at: str | None


class CreatedKey(KeyOut):
    key: str = Field(description="The secret; shown this once and never again")


class KeyList(BaseModel):
    items: list[KeyOut]


def _iso(value: datetime | None) -> str | None:
    return (
        None if value is None else value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def key_json(key: ApiKey) -> dict[str, object]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "scopes": list(key.scopes),
        "created_at": _iso(key.created_at),
        "last_used_at": _iso(key.last_used_at),
    }


async def create_api_key(request: web.Request) -> web.Response:
    principal = require(request, jwt_only=True)
    body = await parse_body(request, CreateKeyBody)
    key, secret = await request.app[ACCOUNTS].create_api_key(
        principal.user_id, body.name, sorted(set(body.scopes))
    )
    return web.json_response(
        {**key_json(key), "key": secret}, status=201, headers={"Cache-Control": "no-store"}
    )


async def list_api_keys(request: web.Request) -> web.Response:
    principal = require(request, jwt_only=True)
    keys = await request.app[ACCOUNTS].api_keys(principal.user_id)
    return web.json_response({"items": [key_json(k) for k in keys]})


async def delete_api_key(request: web.Request) -> web.Response:
    principal = require(request, jwt_only=True)
    if not await request.app[ACCOUNTS].revoke_api_key(principal.user_id, request.match_info["id"]):
        raise ProblemError(404, "no such API key")
    return web.Response(status=204)


def register(api: Api) -> None:
    api.add(
        "POST",
        "/api-keys",
        create_api_key,
        summary="Create an API key (shown once)",
        tag="api-keys",
        body=CreateKeyBody,
        response=CreatedKey,
        status=201,
        auth="jwt",
    )
    api.add(
        "GET",
        "/api-keys",
        list_api_keys,
        summary="Your API keys",
        tag="api-keys",
        response=KeyList,
        auth="jwt",
    )
    api.add(
        "DELETE",
        "/api-keys/{id}",
        delete_api_key,
        summary="Revoke an API key",
        tag="api-keys",
        status=204,
        auth="jwt",
        path_params={"id": "the key's id"},
    )
