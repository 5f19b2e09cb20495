"""Live fan-out to WebSocket clients, with per-channel conflation.

A message is encoded once per tick, as text and as a ready WebSocket frame, and the same bytes
go to every subscriber. A subscriber that keeps up (nothing pending, its socket's write buffer
under the high-water mark) gets the frame written straight to its transport: no task switch,
no per-client encoding, which is what makes a tick reach 10,000 clients quickly. A subscriber
that falls behind gets its messages through its own pump task, which awaits the socket draining;
meanwhile it holds at most one pending message per channel, a newer value replacing the unsent
older one, so memory per connection is bounded by its subscriptions, never by how far behind it
is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from prometheus_client import Counter, Gauge, Histogram

WS_CONNECTIONS = Gauge("tickwatch_gateway_ws_connections", "Open WebSocket connections")
WS_FANOUT_SECONDS = Histogram(
    "tickwatch_gateway_ws_fanout_seconds",
    "Time to hand one message to every subscriber of its channel (frames written or queued)",
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
WS_CONFLATED = Counter(
    "tickwatch_gateway_ws_conflated_total", "Messages replaced by a newer one before being sent"
)

PRICES_ALL = "prices:*"
HIGH_WATER_BYTES = 64 * 1024


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final, uncompressed WebSocket text frame (RFC 6455 §5.2), as a server sends."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 1 << 16:
        header = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + size.to_bytes(8, "big")
    return header + payload


class Outgoing:
    __slots__ = ("frame", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.frame = text_frame(text.encode())


class Subscriber:
    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        transport: asyncio.WriteTransport | None = None,
    ) -> None:
        self.send = send
        self.transport = transport
        self.channels: set[str] = set()
        self.user_id: str | None = None
        self._pending: dict[str, Outgoing] = {}
        self._sending = False
        self._wake = asyncio.Event()

    def offer(self, channel: str, message: Outgoing) -> None:
        transport = self.transport
        if (
            transport is not None
            and not self._pending
            and not self._sending
            and not transport.is_closing()
            and transport.get_write_buffer_size() < HIGH_WATER_BYTES
        ):
            transport.write(message.frame)
            return
        if channel in self._pending:
            WS_CONFLATED.inc()
        self._pending[channel] = message
        self._wake.set()

    async def pump(self) -> None:
        """Send pending messages until cancelled or the connection fails."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                channel = next(iter(self._pending))
                self._sending = True
                try:
                    await self.send(self._pending.pop(channel).text)
                finally:
                    self._sending = False


class Hub:
    def __init__(self) -> None:
        self._by_channel: dict[str, set[Subscriber]] = {}
        self.named: set[str] = set()
        """Public channels another feature publishes to, subscribed by their exact name."""

    def declare(self, channel: str) -> None:
        """Let clients subscribe to ``channel`` (a feature's own, such as ``analytics:movers``)."""
        self.named.add(channel)

    def subscribers(self, channel: str) -> frozenset[Subscriber]:
        """Who subscribes to ``channel`` now (a copy: the caller may offer to each)."""
        return frozenset(self._by_channel.get(channel, ()))

    def subscribe(self, sub: Subscriber, channel: str) -> None:
        sub.channels.add(channel)
        self._by_channel.setdefault(channel, set()).add(sub)

    def unsubscribe(self, sub: Subscriber, channel: str) -> None:
        sub.channels.discard(channel)
        subs = self._by_channel.get(channel)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_channel[channel]

    def remove(self, sub: Subscriber) -> None:
        for channel in list(sub.channels):
            self.unsubscribe(sub, channel)

    def publish(self, channel: str, text: str) -> int:
        """Offer ``text`` to the channel's subscribers (and ``prices:*`` for a price)."""
        started = time.perf_counter()
        message = Outgoing(text)
        delivered = 0
        for sub in self._by_channel.get(channel, ()):
            sub.offer(channel, message)
            delivered += 1
        if channel.startswith("prices:"):
            for sub in self._by_channel.get(PRICES_ALL, ()):
                if channel not in sub.channels:
                    sub.offer(channel, message)
                    delivered += 1
        if delivered:
            WS_FANOUT_SECONDS.observe(time.perf_counter() - started)
        return delivered
