"""A local webhook receiver beside the mail catcher: every POST becomes a JSON file and a row.

Alerts with the ``webhook`` channel need somewhere to call on a laptop; the mail catcher's web
server (``make run``'s mail page, http://127.0.0.1:8025/) also answers ``POST
/webhooks/{name}`` with 200 and keeps the call (its ``X-Tickwatch-*`` headers and body) as
``<dir>/<ns>-<id>.json``. ``GET /webhooks`` lists them, ``GET /api/webhooks`` gives JSON. It does
not verify signatures: it cannot know each alert's secret, and shows the header instead.
"""

from __future__ import annotations

import html
import json
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

MAX_BODY_BYTES = 64 * 1024  # the notifier's bodies are a few hundred bytes
MAX_NAME = 64
KEPT_HEADERS = ("Content-Type", "User-Agent")


def _records(directory: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted(directory.glob("*.json"), reverse=True):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return found


def add_routes(app: web.Application, directory: Path) -> None:
    """``POST /webhooks/{name}``, ``GET /webhooks`` and ``GET /api/webhooks`` on ``app``."""
    directory.mkdir(parents=True, exist_ok=True)

    async def receive(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if len(name) > MAX_NAME or not name.replace("-", "").replace("_", "").isalnum():
            raise web.HTTPNotFound()
        body = await request.content.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            raise web.HTTPRequestEntityTooLarge(MAX_BODY_BYTES, len(body))
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower().startswith("x-tickwatch-") or k in KEPT_HEADERS
        }
        record = {
            "id": f"{time.time_ns()}-{uuid.uuid4().hex[:8]}",
            "name": name,
            "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "headers": headers,
            "body": body.decode(errors="replace"),
        }
        tmp = directory / f".{record['id']}.tmp"
        tmp.write_text(json.dumps(record))
        tmp.rename(directory / f"{record['id']}.json")  # readers never see half a record
        return web.json_response({"received": record["id"]})

    async def index(_: web.Request) -> web.Response:
        rows = "".join(
            f"<tr><td>{html.escape(r['received_at'])}</td><td>{html.escape(r['name'])}</td>"
            f"<td><pre>{html.escape(json.dumps(r['headers'], indent=1))}</pre></td>"
            f"<td><pre>{html.escape(r['body'])}</pre></td></tr>"
            for r in _records(directory)
        )
        page = (
            "<!doctype html><title>Tickwatch webhook catcher</title>"
            "<h1>Webhooks caught on this machine</h1><p><a href='/'>Mail</a></p>"
            "<table border=1 cellpadding=4><tr><th>Received</th><th>Name</th><th>Headers</th>"
            "<th>Body</th></tr>"
            f"{rows or '<tr><td colspan=4>No webhook calls yet</td></tr>'}</table>"
        )
        return web.Response(text=page, content_type="text/html")

    async def api(_: web.Request) -> web.Response:
        return web.json_response(_records(directory))

    app.router.add_post("/webhooks/{name}", receive)
    app.router.add_get("/webhooks", index)
    app.router.add_get("/api/webhooks", api)


def count(directory: Path) -> int:
    return len(list(directory.glob("*.json")))
