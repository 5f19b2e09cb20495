"""The dashboard at ``/``: one self-contained page under a strict Content-Security-Policy."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from aiohttp.test_utils import TestClient

Client = TestClient[Any, Any]


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


async def test_dashboard_page_is_served_with_a_strict_policy(client: Client) -> None:
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    assert resp.charset == "utf-8"
    page = await resp.text()

    # The hooks the page's script drives.
    for hook in (
        'id="prices"',
        'id="replay-banner"',
        "Replay data: live exchanges unreachable",
        'id="chart"',
        'id="auth-form"',
        'id="alert-form"',
        'id="alerts"',
        'id="triggers"',
        'href="/docs"',
    ):
        assert hook in page, hook
    for usage in ('"/ws"', "prices:*", '"auth"', '"alerts"', "/history?interval=", "/indicators/"):
        assert usage in page, usage

    # Self-contained: nothing loaded from another origin (the chart library is served from
    # /static; the one outside address is the licence's attribution link), no innerHTML.
    assert not re.search(r"""src=["']?(https?:)?//""", page)
    assert not re.search(r"""<link[^>]+href=["']?(https?:)?//""", page)
    assert "innerHTML" not in page and "insertAdjacentHTML" not in page
    assert " on" + "click=" not in page.lower()

    policy = dict(
        part.strip().split(" ", 1) for part in resp.headers["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in resp.headers["Content-Security-Policy"]
    (script,) = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    (style,) = re.findall(r"<style>(.*?)</style>", page, re.DOTALL)
    assert policy["script-src"] == "'self' " + _sha256(script)
    assert policy["style-src"] == _sha256(style)
    assert resp.headers["X-Content-Type-Options"] == "nosniff"

    again = await client.get("/", headers={"If-None-Match": resp.headers["ETag"]})
    assert again.status == 304


async def test_dashboard_is_not_an_api_operation(client: Client) -> None:
    document = await (await client.get("/openapi.json")).json()
    assert "/" not in document["paths"]
    head = await client.head("/")
    assert head.status == 200
