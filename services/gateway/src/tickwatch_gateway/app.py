"""The gateway application: the edge, then each feature, wired in the order they depend on.

:func:`build_app` connects to nothing: each feature's ``install_*`` sets what needs no I/O and
appends its cleanup contexts, one per resource, which aiohttp enters in this order when the
app starts and leaves in reverse when it stops. The public app answers ``/health`` and ``/ready``
(load balancers probe it); ``/metrics`` is only on the ops listener (:func:`build_ops_app`,
``OPS_HOST:GATEWAY_OPS_PORT``). The runtime's (pool, Redis, publisher) come first, so every feature's may use them; the market's hub comes before analytics and the alerts, which
push through it. The API's operations are registered in the order of the OpenAPI document.
"""

from __future__ import annotations

from aiohttp import web
from tickwatch_common.ops import add_probe_routes, ops_app

from tickwatch_gateway.accounts import admit, install_accounts, register_accounts
from tickwatch_gateway.alerts import PRODUCED as ALERT_TOPICS
from tickwatch_gateway.alerts import install_alerts, register_alerts
from tickwatch_gateway.analytics import install_analytics, register_analytics
from tickwatch_gateway.dashboard import install_dashboard
from tickwatch_gateway.http.middleware import edge_middleware
from tickwatch_gateway.http.openapi import Api, add_docs_routes
from tickwatch_gateway.http.wiring import install_http
from tickwatch_gateway.market import PRODUCED as MARKET_TOPICS
from tickwatch_gateway.market import install_market, register_market
from tickwatch_gateway.portfolio import install_portfolio, register_portfolio
from tickwatch_gateway.runtime.keys import CHECKS
from tickwatch_gateway.runtime.resources import install_runtime
from tickwatch_gateway.settings import Settings

SERVICE = "gateway"
VERSION = "0.1.0"


def build_api() -> Api:
    api = Api("/api/v1")
    register_market(api)
    register_analytics(api)
    register_accounts(api)
    register_alerts(api)
    register_portfolio(api)
    return api


def build_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[edge_middleware(settings.cors_origin_list, admit)],
        client_max_size=settings.max_body_bytes,
    )
    install_runtime(app, settings, produced=MARKET_TOPICS + ALERT_TOPICS)
    install_http(app, settings)
    install_accounts(app, settings)
    install_market(app, settings)
    install_analytics(app, settings)
    install_alerts(app, settings)
    install_portfolio(app, settings)
    install_dashboard(app)
    api = build_api()
    api.mount(app)
    add_docs_routes(app, api, "Tickwatch", VERSION)
    add_probe_routes(app, SERVICE, app[CHECKS])
    return app


def build_ops_app(app: web.Application) -> web.Application:
    """The ops listener's app for ``app`` (built by :func:`build_app`): ``/health``, ``/ready``
    on the same checks, and ``/metrics``, which the public port does not serve."""
    return ops_app(SERVICE, app[CHECKS])
