"""The ops HTTP server every service runs: ``/health``, ``/ready`` and ``/metrics``.

``/ready`` runs the service's dependency checks concurrently, each bounded by a timeout. A
failing *critical* check answers 503; a failing non-critical one answers 200 with
``"status": "degraded"`` (for example the gateway without Redis still serves).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Check:
    name: str
    probe: Callable[[], Awaitable[CheckResult | bool | None]]
    critical: bool = True


async def _run(check: Check, timeout_s: float) -> CheckResult:
    try:
        result = await asyncio.wait_for(check.probe(), timeout_s)
    except Exception as exc:
        return CheckResult(False, f"{type(exc).__name__}: {exc}"[:300])
    if isinstance(result, CheckResult):
        return result
    return CheckResult(result is not False)


async def readiness(checks: list[Check], timeout_s: float = 2.0) -> tuple[int, dict[str, object]]:
    checks = list(checks)  # a resource starting meanwhile may append to the service's list
    results = await asyncio.gather(*(_run(c, timeout_s) for c in checks))
    body: dict[str, object] = {}
    status, code = "ready", 200
    for check, result in zip(checks, results, strict=True):
        body[check.name] = {"ok": result.ok, "detail": result.detail, "critical": check.critical}
        if not result.ok:
            if check.critical:
                status, code = "not_ready", 503
            elif status == "ready":
                status = "degraded"
    return code, {"status": status, "checks": body}


def add_probe_routes(app: web.Application, service: str, checks: list[Check]) -> None:
    """``/health`` and ``/ready`` only: what a public port also answers (the gateway's, for load
    balancers), where ``/metrics`` has no place."""

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "service": service})

    async def ready(_: web.Request) -> web.Response:
        code, body = await readiness(checks)
        return web.json_response({"service": service, **body}, status=code)

    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)


def add_ops_routes(app: web.Application, service: str, checks: list[Check]) -> None:
    async def metrics(_: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest())
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    add_probe_routes(app, service, checks)
    app.router.add_get("/metrics", metrics)


def ops_app(service: str, checks: list[Check]) -> web.Application:
    """An app of the ops routes alone; ``checks`` is read at each ``/ready``, so a list the
    service fills as its resources start is seen whole."""
    app = web.Application()
    add_ops_routes(app, service, checks)
    return app


@asynccontextmanager
async def ops_server(
    service: str, host: str, port: int, checks: list[Check], *, reuse_port: bool = False
) -> AsyncIterator[web.AppRunner]:
    """Serve the ops routes on their own port (``reuse_port``: shared by several processes)."""
    runner = web.AppRunner(ops_app(service, checks), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
    await site.start()
    try:
        yield runner
    finally:
        await runner.cleanup()
