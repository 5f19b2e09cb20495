"""Text no store can hold (NUL, lone surrogates, controls) answers 422 naming the field, never
500, in every place a client sends text: bodies, query and path."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from .conftest import signup

NUL, SURROGATE = "a\u0000b", "a\ud800b"


async def assert_field_refused(resp: Any, field: str) -> None:
    assert resp.status == 422, await resp.text()
    assert resp.content_type == "application/problem+json"
    body = await resp.json()
    errors = {e["field"]: e["message"] for e in body["errors"]}
    # A lone surrogate is not JSON text at all (RFC 8259 §8.2): the parser refuses the body
    # before any field is read, and says why.
    assert field in errors or errors.get("body", "").startswith("Invalid JSON"), body


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "lone-surrogate"])
async def test_bad_text_in_a_body_or_query_names_the_field(make_client: Any, bad: str) -> None:
    client = await make_client()
    user = await signup(client)
    json_headers = {**user["headers"], "Content-Type": "application/json"}
    email = f"u{uuid.uuid4().hex[:8]}@example.com"

    cases = [
        ("/api/v1/auth/register", {"email": email, "password": "s3cret-pass", "name": bad}, "name"),
        ("/api/v1/auth/register", {"email": f"{bad}@example.com", "password": "x" * 9}, "email"),
        ("/api/v1/auth/login", {"email": email, "password": bad + "long-enough"}, "password"),
        ("/api/v1/api-keys", {"name": bad, "scopes": ["read"]}, "name"),
        (
            "/api/v1/alerts",
            {"symbol": "BTC-USDT", "condition": "above", "target_price": "1", "note": bad},
            "note",
        ),
        ("/api/v1/alerts", {"symbol": bad, "condition": "above", "target_price": "1"}, "symbol"),
    ]
    for path, body, field in cases:
        # ensure_ascii: a lone surrogate goes on the wire as the escape a hostile client sends
        resp = await client.post(
            path, data=json.dumps(body, ensure_ascii=True), headers=json_headers
        )
        await assert_field_refused(resp, field)

    if bad == NUL:  # a URL cannot carry a lone surrogate (it is not UTF-8)
        query = {"symbol": bad}
        resp = await client.get("/api/v1/alerts", params=query, headers=user["headers"])
        await assert_field_refused(resp, "symbol")


async def test_non_ascii_digits_are_not_a_price(make_client: Any) -> None:
    client = await make_client()
    user = await signup(client)
    body = {"symbol": "BTC-USDT", "condition": "above", "target_price": "\u0667\u0660\u0660\u0660"}
    resp = await client.post("/api/v1/alerts", json=body, headers=user["headers"])
    await assert_field_refused(resp, "target_price")
