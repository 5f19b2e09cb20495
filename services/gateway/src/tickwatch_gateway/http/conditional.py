"""HTTP caching of public answers: ETag, If-None-Match and Cache-Control."""

from __future__ import annotations

import hashlib

from aiohttp import web


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=8).hexdigest() + '"'


def cached_json(
    request: web.Request, body: bytes, *, max_age: int, etag: str | None = None
) -> web.Response:
    """A JSON answer with validators; 304 without a body when the client's copy is current."""
    etag = etag or etag_of(body)
    headers = {"ETag": etag, "Cache-Control": f"public, max-age={max_age}"}
    inm = request.headers.get("If-None-Match")
    if inm is not None and (inm.strip() == "*" or etag in {t.strip() for t in inm.split(",")}):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/json", headers=headers)
