"""The typed keys under which the composition root hands the service's objects to handlers."""

from __future__ import annotations

import asyncio

import asyncpg
from aiohttp import web
from tickwatch_common.kafka import Publisher
from tickwatch_common.ops import Check

from tickwatch_gateway.accounts import AccountStore
from tickwatch_gateway.cache import RedisGuard, ResponseCache
from tickwatch_gateway.candles import CandleStore
from tickwatch_gateway.fanout import Hub
from tickwatch_gateway.feed import MarketFeed
from tickwatch_gateway.pricebook import PriceBook
from tickwatch_gateway.ratelimit import RateLimiter
from tickwatch_gateway.revocation import LoginRevocations
from tickwatch_gateway.settings import Settings
from tickwatch_gateway.symbols import SymbolDirectory
from tickwatch_gateway.tokens import TokenIssuer

SETTINGS = web.AppKey("settings", Settings)
# The readiness checks: resources started later (the publisher, consumer groups) add theirs,
# and /ready reads the list at each request.
CHECKS = web.AppKey("readiness_checks", list[Check])
SYMBOLS = web.AppKey("symbols", SymbolDirectory)
BOOK = web.AppKey("book", PriceBook)
HUB = web.AppKey("hub", Hub)
TOKENS = web.AppKey("tokens", TokenIssuer)
POOL = web.AppKey("pool", asyncpg.Pool)
REDIS = web.AppKey("redis", RedisGuard)
CACHE = web.AppKey("cache", ResponseCache)
ACCOUNTS = web.AppKey("accounts", AccountStore)
CANDLES = web.AppKey("candles", CandleStore)
FEED = web.AppKey("feed", MarketFeed)
LIMITER = web.AppKey("limiter", RateLimiter)
REVOCATIONS = web.AppKey("revocations", LoginRevocations)
PUBLISHER = web.AppKey("publisher", Publisher)
TASKS = web.AppKey("tasks", list[asyncio.Task[None]])
