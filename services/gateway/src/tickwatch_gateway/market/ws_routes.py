"""WebSocket ``/ws``: live prices and candles; ``auth`` opens the private channels.

Client → server (JSON text frames):
  ``{"op": "subscribe", "channels": ["prices:BTC-USDT", "prices:*", "candles:BTC-USDT:1m"]}``
  (and the channels other features declare on the hub, such as ``analytics:movers``),
  ``{"op": "unsubscribe", "channels": [...]}``, ``{"op": "auth", "token": "<access JWT>"}``
  (then ``alerts`` and ``portfolio`` may be subscribed), ``{"op": "ping"}``.
Server → client: ``{"channel": ..., "data": ...}``; replies ``{"op": "subscribed" | "unsubscribed"
| "authenticated" | "pong" | "error", ...}``; WebSocket pings every ``WS_HEARTBEAT_S``.
A slow client gets the latest value per channel (see :mod:`tickwatch_gateway.fanout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from tickwatch_gateway.accounts import (
    PRINCIPAL,
    SESSIONS,
    Principal,
    SessionWatch,
    Watched,
    verify_access,
)
from tickwatch_gateway.http.problems import ProblemError
from tickwatch_gateway.market.fanout import PRICES_ALL, WS_CONNECTIONS, Hub, Outgoing, Subscriber
from tickwatch_gateway.market.keys import BOOK, HUB, MARKET_SETTINGS, SYMBOLS
from tickwatch_gateway.market.rollup import INTERVAL_MS

PRIVATE_CHANNELS = frozenset({"alerts", "portfolio"})


class ChannelError(ValueError):
    pass


def canonical_channel(request: web.Request, raw: object) -> str:
    if not isinstance(raw, str) or len(raw) > 100:
        raise ChannelError("a channel is a short string")
    if raw == PRICES_ALL or raw in PRIVATE_CHANNELS or raw in request.app[HUB].named:
        return raw
    kind, _, rest = raw.partition(":")
    symbols = request.app[SYMBOLS]
    if kind == "prices" and rest:
        symbol = symbols.resolve(rest)
        if symbol is None:
            raise ChannelError(f"unknown symbol {rest!r}; known: {', '.join(symbols.known())}")
        return f"prices:{symbol}"
    if kind == "candles":
        name, _, interval = rest.rpartition(":")
        symbol = symbols.resolve(name)
        if symbol is None or interval not in INTERVAL_MS:
            raise ChannelError(f"bad candles channel {raw!r}; e.g. candles:BTC-USDT:1m")
        return f"candles:{symbol}:{interval}"
    raise ChannelError(
        f"unknown channel {raw!r}; e.g. prices:BTC-USDT, prices:*, candles:BTC-USDT:1m"
    )


async def websocket(request: web.Request) -> web.WebSocketResponse:
    settings = request.app[MARKET_SETTINGS]
    hub = request.app[HUB]
    ws = web.WebSocketResponse(
        heartbeat=settings.ws_heartbeat_s,
        max_msg_size=settings.ws_max_message_bytes,
        compress=False,  # fan-out writes ready-made uncompressed frames
    )
    await ws.prepare(request)
    sub = Subscriber(ws.send_str, request.transport)
    session = _Session(request.app[SESSIONS], ws, sub, hub)
    principal = request.get(PRINCIPAL)
    if isinstance(principal, Principal):
        sub.user_id = principal.user_id
        if principal.via == "jwt" and principal.expires_at is not None:
            session.start(principal.session_id, principal.expires_at)
    pump = asyncio.create_task(_pump(sub, ws))
    WS_CONNECTIONS.inc()
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                request_ = json.loads(msg.data)
                if not isinstance(request_, dict):
                    raise ValueError
            except ValueError:
                await ws.send_json({"op": "error", "error": "send JSON objects"})
                continue
            await _handle(request, ws, sub, session, request_)
    finally:
        session.stop()
        WS_CONNECTIONS.dec()
        hub.remove(sub)
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
    return ws


async def _pump(sub: Subscriber, ws: web.WebSocketResponse) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        await sub.pump()
    await ws.close()


class _Session:
    """The login a socket is authenticated as, watched so that the socket closes when the
    login is revoked (logout on any replica) or its access token expires."""

    def __init__(
        self, watch: SessionWatch, ws: web.WebSocketResponse, sub: Subscriber, hub: Hub
    ) -> None:
        self.watch, self.ws, self.sub, self.hub = watch, ws, sub, hub
        self.watched: Watched | None = None

    def start(self, session_id: str | None, expires_at_s: int) -> None:
        self.stop()
        self.watched = self.watch.watch(session_id, expires_at_s, self.end)

    def stop(self) -> None:
        if self.watched is not None:
            self.watch.unwatch(self.watched)
            self.watched = None

    async def end(self, reason: str) -> None:
        self.hub.remove(self.sub)  # nothing private is sent after this
        self.sub.user_id = None
        await self.ws.send_json({"op": "error", "error": f"session ended: {reason}"})
        await self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=reason.encode())


async def _handle(
    request: web.Request,
    ws: web.WebSocketResponse,
    sub: Subscriber,
    session: _Session,
    msg: dict[str, Any],
) -> None:
    op = msg.get("op")
    hub = request.app[HUB]
    if op == "ping":
        await ws.send_json({"op": "pong"})
    elif op == "auth":
        token = msg.get("token")
        try:  # the same check as a bearer token: signature, claims, and not logged out
            claims = await verify_access(request.app, token if isinstance(token, str) else "")
        except ProblemError as exc:
            await ws.send_json({"op": "error", "error": exc.detail})
            return
        sub.user_id = claims.user_id
        session.start(claims.session_id, claims.expires_at)
        await ws.send_json({"op": "authenticated", "user_id": claims.user_id})
    elif op in ("subscribe", "unsubscribe"):
        raw = msg.get("channels")
        if not isinstance(raw, list) or not raw:
            await ws.send_json({"op": "error", "error": "channels must be a non-empty list"})
            return
        try:
            channels = [canonical_channel(request, c) for c in raw]
        except ChannelError as exc:
            await ws.send_json({"op": "error", "error": str(exc)})
            return
        if op == "unsubscribe":
            for channel in channels:
                hub.unsubscribe(sub, channel)
            await ws.send_json({"op": "unsubscribed", "channels": channels})
            return
        if sub.user_id is None and PRIVATE_CHANNELS.intersection(channels):
            await ws.send_json({"op": "error", "error": 'authenticate first: {"op":"auth"}'})
            return
        limit = request.app[MARKET_SETTINGS].ws_max_subscriptions
        if len(sub.channels | set(channels)) > limit:
            await ws.send_json({"op": "error", "error": f"at most {limit} subscriptions"})
            return
        for channel in channels:
            hub.subscribe(sub, channel)
        await ws.send_json({"op": "subscribed", "channels": channels})
        _snapshot(request, sub, channels)
    else:
        await ws.send_json({"op": "error", "error": f"unknown op {str(op)[:40]!r}"})


def _snapshot(request: web.Request, sub: Subscriber, channels: list[str]) -> None:
    """Send the current price at once, so a new subscriber need not wait for the next tick."""
    book = request.app[BOOK]
    for channel in channels:
        views = book.all_latest() if channel == PRICES_ALL else []
        if channel.startswith("prices:") and channel != PRICES_ALL:
            view = book.latest(channel.removeprefix("prices:"))
            views = [view] if view is not None else []
        for view in views:
            name = f"prices:{view.tick.symbol}"
            sub.offer(name, Outgoing(f'{{"channel":"{name}","data":{view.body.decode()}}}'))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ws", websocket)
