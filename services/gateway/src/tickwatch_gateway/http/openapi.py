"""Routes declared once with their pydantic models, mounted on aiohttp and described as OpenAPI 3.1.

A routes module registers each operation on an :class:`Api` with the models it reads and answers;
the same declarations mount the handlers and generate ``/openapi.json``, so the document cannot
drift from the code. pydantic's JSON Schema (draft 2020-12) is what OpenAPI 3.1 speaks.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from tickwatch_gateway.http.middleware import MAX_TARGET_BYTES

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Auth = Literal["public", "user", "jwt"]
"""public: anyone (credentials optional); user: JWT or API key; jwt: a user's access token only."""

_PATH_PARAM = re.compile(r"{(\w+)}")


class Problem(BaseModel):
    """RFC 9457 problem details; ``errors`` lists the fields at fault on a 422."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    response: type[BaseModel] | None = None
    status: int = 200
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    body_optional: bool = False
    """The body may be left out altogether (the handler then uses the model's defaults)."""
    auth: Auth = "public"
    scope: str | None = None
    path_params: dict[str, str] = field(default_factory=dict)
    cached: bool = False


class Api:
    """The public API's operations under one prefix."""

    def __init__(self, prefix: str = "/api/v1") -> None:
        self.prefix = prefix
        self.operations: list[Operation] = []

    def add(self, method: str, path: str, handler: Handler, **options: Any) -> None:
        self.operations.append(Operation(method.upper(), path, handler, **options))

    def mount(self, app: web.Application) -> None:
        for op in self.operations:
            app.router.add_route(op.method, self.prefix + op.path, op.handler)

    def document(self, title: str, version: str, description: str = "") -> dict[str, Any]:
        schemas: dict[str, Any] = {}
        _schema(Problem, schemas, "serialization")
        paths: dict[str, dict[str, Any]] = {}
        for op in self.operations:
            paths.setdefault(self.prefix + op.path, {})[op.method.lower()] = self._operation(
                op, schemas
            )
        return {
            "openapi": "3.1.0",
            "info": {"title": title, "version": version, "description": description},
            "servers": [{"url": "/"}],
            "paths": paths,
            "components": {
                "schemas": schemas,
                "securitySchemes": {
                    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                },
            },
        }

    def _operation(self, op: Operation, schemas: dict[str, Any]) -> dict[str, Any]:
        problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        rate_headers = {
            name: {"schema": {"type": "integer"}, "description": text}
            for name, text in (
                ("RateLimit-Limit", "requests allowed in the window"),
                ("RateLimit-Remaining", "requests left in the window"),
                ("RateLimit-Reset", "seconds until the window resets"),
            )
        }
        ok: dict[str, Any] = {"description": "success", "headers": rate_headers}
        if op.response is not None:
            ok["content"] = {
                "application/json": {"schema": _schema(op.response, schemas, "serialization")}
            }
        responses: dict[str, Any] = {str(op.status): ok}
        errors = {404: "not found", 422: "invalid request: `errors` names each field at fault"}
        errors[429] = "rate limited; retry after `Retry-After` seconds"
        errors[414] = f"path and query longer than {MAX_TARGET_BYTES} bytes"
        if op.body is not None:
            errors |= {413: "request body too large", 415: "body is not application/json"}
        if op.auth != "public":
            errors |= {401: "missing or invalid credentials", 403: "not allowed"}
        else:
            errors |= {401: "invalid credentials were presented"}
        if op.method in ("POST", "PATCH", "PUT"):
            errors |= {409: "conflicts with the current state"}
        for code, text in sorted(errors.items()):
            responses[str(code)] = {"description": text, "content": problem}
        if op.cached:
            responses["304"] = {"description": "not modified (If-None-Match)"}
        parameters: list[dict[str, Any]] = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "minLength": 1, "maxLength": 64},
                "description": op.path_params.get(name, ""),
            }
            for name in _PATH_PARAM.findall(op.path)
        ]
        if op.query is not None:
            query_schema = op.query.model_json_schema(mode="validation")
            required = set(query_schema.get("required", []))
            for name, prop in query_schema.get("properties", {}).items():
                parameters.append(
                    {
                        "name": name,
                        "in": "query",
                        "required": name in required,
                        "schema": {k: v for k, v in prop.items() if k != "title"},
                        "description": prop.get("description", ""),
                    }
                )
        doc: dict[str, Any] = {
            "operationId": op.handler.__name__,
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": parameters,
            "responses": responses,
        }
        if op.body is not None:
            doc["requestBody"] = {
                "required": not op.body_optional,
                "content": {
                    "application/json": {"schema": _schema(op.body, schemas, "validation")}
                },
            }
        if op.auth == "user":
            doc["security"] = [{"bearerAuth": []}, {"apiKey": []}]
        elif op.auth == "jwt":
            doc["security"] = [{"bearerAuth": []}]
        if op.scope:
            doc["description"] = f"API keys need the `{op.scope}` scope."
        return doc


def _schema(
    model: type[BaseModel], schemas: dict[str, Any], mode: Literal["validation", "serialization"]
) -> dict[str, Any]:
    """Put ``model`` (and what it refers to) in ``schemas``; return a reference to it."""
    schema = model.model_json_schema(mode=mode, ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        schemas[name] = sub
    schemas[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def docs_page(document: dict[str, Any]) -> str:
    """A self-contained HTML reference with a small "try it" form per operation (no CDN)."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>",
        html.escape(document["info"]["title"]),
        " API</title><style>body{font-family:sans-serif;max-width:60em;margin:auto}"
        "section{border:1px solid #ccc;margin:1em 0;padding:.5em 1em}"
        "code.m{font-weight:bold;padding:0 .4em;background:#eef}pre{background:#f6f6f6;"
        "padding:.5em;overflow:auto;max-height:20em}input,textarea{width:100%}</style></head><body>",
        f"<h1>{html.escape(document['info']['title'])} API {html.escape(document['info']['version'])}</h1>",
        "<p>Machine-readable description: <a href='/openapi.json'>/openapi.json</a> (OpenAPI 3.1). "
        "Errors are <code>application/problem+json</code>. Private routes take "
        "<code>Authorization: Bearer &lt;access token&gt;</code> or <code>X-API-Key</code>.</p>"
        "<p>Token for the forms below: <input id='token' placeholder='access token or API key'></p>",
    ]
    for n, (path, methods) in enumerate(document["paths"].items()):
        for method, op in methods.items():
            fid = f"op{n}{method}"
            params = "".join(
                f"<li><code>{html.escape(p['name'])}</code> ({p['in']}"
                f"{', required' if p.get('required') else ''}) {html.escape(p.get('description', ''))}"
                f" <input data-in='{p['in']}' name='{html.escape(p['name'])}'></li>"
                for p in op.get("parameters", [])
            )
            body = ""
            if "requestBody" in op:
                ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                name = ref.rsplit("/", 1)[-1]
                schema = json.dumps(document["components"]["schemas"][name], indent=1)
                body = (
                    f"<p>Body ({html.escape(name)}):</p><pre>{html.escape(schema)}</pre>"
                    "<textarea rows=4 name='body'>{}</textarea>"
                )
            codes = ", ".join(op["responses"])
            auth = "public" if "security" not in op else "needs credentials"
            parts.append(
                f"<section id='{fid}'><h3><code class=m>{method.upper()}</code> "
                f"<code>{html.escape(path)}</code> {html.escape(op['summary'])}</h3>"
                f"<p>{auth}; answers {codes}. {html.escape(op.get('description', ''))}</p>"
                f"<ul>{params}</ul>{body}"
                f"<button onclick=\"tryIt('{fid}','{method.upper()}','{html.escape(path)}')\">"
                "Try it</button><pre class=out></pre></section>"
            )
    parts.append(_TRY_IT_JS)
    parts.append("</body></html>")
    return "".join(parts)


_TRY_IT_JS = """<script>
async function tryIt(id, method, path) {
  const s = document.getElementById(id), q = new URLSearchParams();
  for (const i of s.querySelectorAll('input[data-in]')) {
    if (!i.value) continue;
    if (i.dataset.in === 'path') path = path.replace('{' + i.name + '}', encodeURIComponent(i.value));
    else q.append(i.name, i.value);
  }
  const headers = {}, t = document.getElementById('token').value.trim();
  if (t) { if (t.split('.').length === 3) headers['Authorization'] = 'Bearer ' + t;
           else headers['X-API-Key'] = t; }
  const b = s.querySelector('textarea'), init = {method, headers};
  if (b) { init.body = b.value; headers['Content-Type'] = 'application/json'; }
  const r = await fetch(path + (q.toString() ? '?' + q : ''), init);
  s.querySelector('.out').textContent = r.status + ' ' + r.statusText + '\\n' + await r.text();
}
</script>"""


def add_docs_routes(app: web.Application, api: Api, title: str, version: str) -> None:
    document = api.document(title, version, "Crypto market data and price alerts.")
    page = docs_page(document)

    async def openapi_json(_: web.Request) -> web.Response:
        return web.json_response(document)

    async def docs(_: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/docs", docs)
