"""The dashboard at ``GET /``: one self-contained page, HTML, CSS and vanilla JS in one file.

The page is package data (``static/dashboard.html``), read once when the app is built. It talks
only to this origin: ``/api/v1`` for the first paint, the account and the alerts, and ``/ws``
for live prices, candles and alert triggers. Its Content-Security-Policy allows nothing from
any other origin: the page's one inline ``<style>`` and one inline ``<script>`` are allowed by
their SHA-256 hashes (so no other script or inline handler could run), fetches and the
WebSocket go to ``'self'`` only, and the page cannot be framed. Like ``/ws`` and ``/docs`` it
is not an API operation, so it is mounted directly and not described in ``/openapi.json``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files

from aiohttp import web

from tickwatch_gateway.http.conditional import etag_of

PAGE = "dashboard.html"
_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


def load_page() -> str:
    return (files("tickwatch_gateway.dashboard") / "static" / PAGE).read_text(encoding="utf-8")


def _hash_source(text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


def content_security_policy(page: str) -> str:
    """A policy allowing exactly the page's own inline style and script, and this origin."""
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for kind, text in _INLINE.findall(page):
        hashes[kind].append(_hash_source(text))
    return "; ".join(
        (
            "default-src 'none'",
            "script-src " + (" ".join(hashes["script"]) or "'none'"),
            "style-src " + (" ".join(hashes["style"]) or "'none'"),
            "connect-src 'self'",
            "img-src 'self'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


def add_routes(app: web.Application) -> None:
    page = load_page()
    body = page.encode()
    etag = etag_of(body)
    headers = {
        "Content-Security-Policy": content_security_policy(page),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
        "ETag": etag,
    }

    async def dashboard(request: web.Request) -> web.Response:
        inm = request.headers.get("If-None-Match")
        if inm is not None and etag in {t.strip() for t in inm.split(",")}:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type="text/html", charset="utf-8", headers=headers)

    app.router.add_get("/", dashboard)
