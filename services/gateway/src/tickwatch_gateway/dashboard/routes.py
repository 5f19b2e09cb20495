"""The dashboard: one page at ``GET /`` and at its deep links, and its static files.

The page is package data (``static/dashboard.html``), read once when the app is built, like
every other file in ``static/`` (the vendored chart library, its licence, the icon). It talks
only to this origin: ``/api/v1`` for the first paint, the account, the alerts and the
portfolio (proxied by the gateway to the portfolio service), and ``/ws`` for live prices,
candles, alert triggers and the portfolio's valuations. Its Content-Security-Policy allows nothing from
any other origin: scripts only from this origin (``/static/…``) or the page's one inline
``<script>`` by its SHA-256 hash, the one inline ``<style>`` by its hash (so no other inline
script, handler or style could run), fetches and the WebSocket to ``'self'`` only, and the page
cannot be framed.

``/markets/{symbol}`` and ``/alerts/{id}`` (the link in every alert e-mail) answer the same page,
which reads its own path to open on that market or alert. Like ``/ws`` and ``/docs`` none of
these is an API operation, so they are mounted directly and not described in ``/openapi.json``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from importlib.resources import files

from aiohttp import web

from tickwatch_gateway.http.conditional import etag_of

PAGE = "dashboard.html"
_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)
STATIC_CACHE = "public, max-age=604800"
"""A week: the library's file name carries its version, so a new one is a new URL."""
CONTENT_TYPES = {
    ".js": "text/javascript",
    ".svg": "image/svg+xml",
    ".txt": "text/plain",
    ".css": "text/css",
}
SYMBOL_PATH = r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}"
ALERT_ID_PATH = r"[A-Za-z0-9-]{1,64}"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def load_page() -> str:
    return (files("tickwatch_gateway.dashboard") / "static" / PAGE).read_text(encoding="utf-8")


def load_assets() -> dict[str, Asset]:
    """Every file of ``static/`` with a known type, by name (the page itself is served at ``/``)."""
    assets: dict[str, Asset] = {}
    for entry in (files("tickwatch_gateway.dashboard") / "static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if not entry.is_file() or entry.name == PAGE or suffix not in CONTENT_TYPES:
            continue
        body = entry.read_bytes()
        assets[entry.name] = Asset(body, CONTENT_TYPES[suffix], etag_of(body))
    return assets


def _hash_source(text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


def content_security_policy(page: str) -> str:
    """A policy allowing this origin's scripts, the page's own inline style and script."""
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for kind, text in _INLINE.findall(page):
        hashes[kind].append(_hash_source(text))
    return "; ".join(
        (
            "default-src 'none'",
            "script-src " + " ".join(["'self'", *hashes["script"]]),
            "style-src " + (" ".join(hashes["style"]) or "'none'"),
            "connect-src 'self'",
            "img-src 'self'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


def _fresh(request: web.Request, etag: str) -> bool:
    inm = request.headers.get("If-None-Match")
    return inm is not None and etag in {t.strip() for t in inm.split(",")}


def add_routes(app: web.Application) -> None:
    page = load_page()
    body = page.encode()
    etag = etag_of(body)
    headers = {
        "Content-Security-Policy": content_security_policy(page),
        **SECURITY_HEADERS,
        "Cache-Control": "no-cache",
        "ETag": etag,
    }
    assets = load_assets()

    async def dashboard(request: web.Request) -> web.Response:
        if _fresh(request, etag):
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type="text/html", charset="utf-8", headers=headers)

    def serve(asset: Asset, request: web.Request) -> web.Response:
        asset_headers = {**SECURITY_HEADERS, "Cache-Control": STATIC_CACHE, "ETag": asset.etag}
        if _fresh(request, asset.etag):
            return web.Response(status=304, headers=asset_headers)
        charset = None if asset.content_type.startswith("image/") else "utf-8"
        return web.Response(
            body=asset.body, content_type=asset.content_type, charset=charset, headers=asset_headers
        )

    async def static(request: web.Request) -> web.Response:
        asset = assets.get(request.match_info["name"])
        if asset is None:
            raise web.HTTPNotFound()
        return serve(asset, request)

    async def favicon(request: web.Request) -> web.Response:
        return serve(assets["favicon.svg"], request)

    app.router.add_get("/", dashboard)
    app.router.add_get("/markets/{symbol:" + SYMBOL_PATH + "}", dashboard)
    app.router.add_get("/alerts/{id:" + ALERT_ID_PATH + "}", dashboard)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/favicon.ico", favicon)
