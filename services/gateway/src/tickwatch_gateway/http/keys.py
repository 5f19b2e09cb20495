"""The typed keys of the edge."""

from __future__ import annotations

from aiohttp import web

from tickwatch_gateway.http.ratelimit import RateLimiter

LIMITER = web.AppKey("limiter", RateLimiter)
