"""A local SMTP mail catcher: every message becomes an ``.eml`` file and a row on a web page.

``python -m tickwatch_devstack.mailcatcher --smtp-port 1025 --http-port 8025 --dir .data/mail``.
``GET /`` lists the messages, ``GET /messages/{name}`` shows one, ``GET /api/messages`` gives JSON.
The same web server catches webhooks (:mod:`tickwatch_devstack.webhookcatcher`, kept in
``--webhook-dir``, by default ``webhooks`` beside ``--dir``): ``POST /webhooks/{name}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import html
import json
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tickwatch_devstack import webhookcatcher


class SaveToDisk:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.eml"
        body = envelope.original_content or b""
        tmp = self.directory / f".{name}.tmp"
        tmp.write_bytes(body)
        tmp.rename(self.directory / name)  # readers never see half a message
        (self.directory / f"{name}.json").write_text(
            json.dumps({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos})
        )
        return "250 Message accepted for delivery"


def summary(path: Path) -> dict[str, Any]:
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    return {
        "id": path.name,
        "from": str(msg.get("From", "")),
        "to": str(msg.get("To", "")),
        "subject": str(msg.get("Subject", "")),
        "date": str(msg.get("Date", "")),
    }


def make_app(directory: Path, webhook_dir: Path | None = None) -> web.Application:
    hooks = webhook_dir or directory.parent / "webhooks"

    def messages() -> list[Path]:
        return sorted(directory.glob("*.eml"), reverse=True)

    async def index(_: web.Request) -> web.Response:
        rows = "".join(
            f"<tr><td>{html.escape(s['date'])}</td><td>{html.escape(s['to'])}</td>"
            f"<td><a href='/messages/{s['id']}'>{html.escape(s['subject'])}</a></td></tr>"
            for s in map(summary, messages())
        )
        page = (
            "<!doctype html><title>Tickwatch mail catcher</title>"
            "<h1>Mail caught by the local SMTP server</h1>"
            f"<p><a href='/webhooks'>Webhooks caught</a>: {webhookcatcher.count(hooks)}"
            " (POST /webhooks/&lt;name&gt;)</p>"
            "<table border=1 cellpadding=4><tr><th>Date</th><th>To</th><th>Subject</th></tr>"
            f"{rows or '<tr><td colspan=3>No mail yet</td></tr>'}</table>"
        )
        return web.Response(text=page, content_type="text/html")

    async def show(request: web.Request) -> web.Response:
        path = directory / request.match_info["name"]
        if path.suffix != ".eml" or path.parent != directory or not path.exists():
            raise web.HTTPNotFound()
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        part = msg.get_body(preferencelist=("html", "plain"))
        content = part.get_content() if part is not None else ""
        if part is not None and part.get_content_type() == "text/plain":
            content = f"<pre>{html.escape(content)}</pre>"
        head = html.escape(f"From: {msg['From']}\nTo: {msg['To']}\nSubject: {msg['Subject']}")
        return web.Response(text=f"<pre>{head}</pre><hr>{content}", content_type="text/html")

    async def api(_: web.Request) -> web.Response:
        return web.json_response([summary(p) for p in messages()])

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/messages/{name}", show)
    app.router.add_get("/api/messages", api)
    webhookcatcher.add_routes(app, hooks)
    return app


async def serve(
    smtp_port: int, http_port: int, directory: Path, webhook_dir: Path | None = None
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    controller = Controller(SaveToDisk(directory), hostname="127.0.0.1", port=smtp_port)
    controller.start()
    runner = web.AppRunner(make_app(directory, webhook_dir), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    print(f"mail catcher: smtp://127.0.0.1:{smtp_port}  http://127.0.0.1:{http_port}/", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        controller.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smtp-port", type=int, default=1025)
    parser.add_argument("--http-port", type=int, default=8025)
    parser.add_argument("--dir", type=Path, default=Path(".data/mail"))
    parser.add_argument("--webhook-dir", type=Path, help="default: webhooks beside --dir")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.smtp_port, args.http_port, args.dir, args.webhook_dir))


if __name__ == "__main__":
    main()
