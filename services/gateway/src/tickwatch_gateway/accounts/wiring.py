"""The accounts' resources: the token issuer (no I/O), then the account store and the login
revocations on the shared pool and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from tickwatch_gateway.accounts import api_key_routes, routes
from tickwatch_gateway.accounts.keys import (
    ACCOUNT_SETTINGS,
    ACCOUNTS,
    REVOCATIONS,
    SESSIONS,
    TOKENS,
)
from tickwatch_gateway.accounts.revocation import LoginRevocations
from tickwatch_gateway.accounts.session_watch import SessionWatch
from tickwatch_gateway.accounts.settings import AccountSettings
from tickwatch_gateway.accounts.store import AccountStore
from tickwatch_gateway.accounts.tokens import LEEWAY_S, TokenIssuer
from tickwatch_gateway.http.openapi import Api
from tickwatch_gateway.runtime.keys import FEED, POOL, REDIS, TASKS
from tickwatch_gateway.runtime.shutdown import stop_tasks


def install_accounts(app: web.Application, settings: AccountSettings) -> None:
    """After the runtime's resources (uses their pool and Redis)."""
    app[ACCOUNT_SETTINGS] = settings
    app[TOKENS] = TokenIssuer(
        settings.jwt_secret.get_secret_value(),
        settings.jwt_issuer,
        settings.jwt_audience,
        settings.access_token_ttl_s,
    )

    async def stores(app: web.Application) -> AsyncIterator[None]:
        app[ACCOUNTS] = AccountStore(
            app[POOL], settings.refresh_token_ttl_s, settings.api_key_touch_interval_s
        )
        app[REVOCATIONS] = revocations = LoginRevocations(
            app[REDIS], app[POOL], settings.access_token_ttl_s + LEEWAY_S, app[FEED]
        )
        app[SESSIONS] = sessions = SessionWatch(revocations, settings.ws_session_check_s)
        revocations.on_revoke = sessions.poke
        task = asyncio.create_task(sessions.run(), name="ws-session-watch")
        app[TASKS].append(task)
        try:
            yield
        finally:
            await stop_tasks([task], settings.shutdown_timeout_s)
            await revocations.close()

    app.cleanup_ctx.append(stores)


def register_accounts(api: Api) -> None:
    """``/auth`` and ``/api-keys`` in the OpenAPI document, in that order."""
    routes.register(api)
    api_key_routes.register(api)
