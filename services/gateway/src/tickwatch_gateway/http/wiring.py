"""The edge's resources: the rate limiter (Redis-backed, with its background flush)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from tickwatch_gateway.http.keys import LIMITER
from tickwatch_gateway.http.problems import MAX_BODY
from tickwatch_gateway.http.ratelimit import RateLimiter
from tickwatch_gateway.http.settings import HttpSettings
from tickwatch_gateway.runtime.keys import REDIS, TASKS
from tickwatch_gateway.runtime.shutdown import bounded, stop_tasks


def install_http(app: web.Application, settings: HttpSettings) -> None:
    """After :func:`~tickwatch_gateway.runtime.resources.install_runtime` (uses its Redis)."""
    app[MAX_BODY] = settings.max_body_bytes

    async def limiter(app: web.Application) -> AsyncIterator[None]:
        app[LIMITER] = limiter = RateLimiter(
            settings.redis_url,
            app[REDIS],
            settings.rate_limit_default,
            settings.rate_limit_auth,
            settings.redis_timeout_s,
        )
        flush = asyncio.create_task(limiter.run(), name="rate-limit-flush")
        app[TASKS].append(flush)
        try:
            yield
        finally:
            await stop_tasks([flush], settings.shutdown_timeout_s)
            await bounded("rate-limit flush", limiter.aclose, settings.shutdown_timeout_s)

    app.cleanup_ctx.append(limiter)
