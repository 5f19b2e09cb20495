"""``POST /ops/reconcile``: rebuild ``alerts.changes.v1`` from the tables now, answering counts.

On the public port, beside ``/health`` and ``/ready`` (``/metrics`` is on the ops listener,
``GATEWAY_OPS_PORT``), behind an operator guard: a bearer JWT with ``typ: "ops"`` signed with ``JWT_SECRET``
and living at most five minutes (``python -m tickwatch_devstack reconcile`` makes one). Users'
access tokens and API keys are refused, so only whoever holds the signing key can call it.
Not an API operation, so not in ``/openapi.json``.
"""

from __future__ import annotations

from aiohttp import web

from tickwatch_gateway.accounts import require_ops
from tickwatch_gateway.alerts.changes_log import ReconcileBusy
from tickwatch_gateway.alerts.keys import RECONCILER
from tickwatch_gateway.http.problems import ProblemError

PATH = "/ops/reconcile"


async def reconcile(request: web.Request) -> web.Response:
    require_ops(request)
    reconciler = request.app.get(RECONCILER)
    if reconciler is None:
        raise ProblemError(503, "the gateway is still starting")
    try:
        report = await reconciler.run("on_demand")
    except ReconcileBusy as exc:
        raise ProblemError(409, str(exc)) from None
    except TimeoutError:
        raise ProblemError(
            503, f"alerts.changes.v1 could not be read within {reconciler.timeout_s} s"
        ) from None
    return web.json_response(report.as_json())


def add_routes(app: web.Application) -> None:
    app.router.add_post(PATH, reconcile)
