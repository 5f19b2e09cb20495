"""A slow subscriber gets the latest value per channel, never a growing backlog."""

from __future__ import annotations

import asyncio

from tickwatch_gateway.market.fanout import Hub, Subscriber, text_frame


async def test_a_slow_client_gets_the_latest_value_per_channel() -> None:
    sent: list[str] = []
    gate, three_sent = asyncio.Event(), asyncio.Event()

    async def slow_send(message: str) -> None:
        await gate.wait()
        sent.append(message)
        if len(sent) == 3:
            three_sent.set()

    hub = Hub()
    sub = Subscriber(slow_send)
    hub.subscribe(sub, "prices:BTC-USDT")
    hub.subscribe(sub, "prices:ETH-USDT")
    pump = asyncio.create_task(sub.pump())
    hub.publish("prices:BTC-USDT", "btc-1")
    await asyncio.sleep(0)  # the pump takes btc-1 and blocks on the slow socket
    for i in range(2, 1000):
        hub.publish("prices:BTC-USDT", f"btc-{i}")
        hub.publish("prices:ETH-USDT", f"eth-{i}")
    assert len(sub._pending) == 2  # bounded by channels, not by how far behind it is
    gate.set()
    await asyncio.wait_for(three_sent.wait(), 5)
    pump.cancel()
    assert sent == ["btc-1", "btc-999", "eth-999"]


def test_wildcard_subscribers_get_every_price_once() -> None:
    hub = Hub()

    async def send(_: str) -> None: ...

    both, wild = Subscriber(send), Subscriber(send)
    hub.subscribe(both, "prices:*")
    hub.subscribe(both, "prices:BTC-USDT")
    hub.subscribe(wild, "prices:*")
    assert hub.publish("prices:BTC-USDT", "m") == 2
    assert hub.publish("candles:BTC-USDT:1m", "c") == 0
    hub.remove(both)
    assert hub.publish("prices:BTC-USDT", "m") == 1


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self.buffered


async def test_a_client_that_keeps_up_gets_ready_frames_and_a_full_one_is_conflated() -> None:
    sent: list[str] = []
    got_one = asyncio.Event()

    async def send(message: str) -> None:
        sent.append(message)
        got_one.set()

    transport = FakeTransport()
    hub = Hub()
    sub = Subscriber(send, transport)  # type: ignore[arg-type]
    hub.subscribe(sub, "prices:BTC-USDT")
    hub.publish("prices:BTC-USDT", "a" * 10)
    assert transport.written == [b"\x81\x0a" + b"a" * 10]
    assert text_frame(b"x" * 300)[:4] == b"\x81\x7e\x01\x2c"

    transport.buffered = 10**6  # the client stopped reading
    for i in range(100):
        hub.publish("prices:BTC-USDT", f"m{i}")
    assert len(transport.written) == 1
    assert [m.text for m in sub._pending.values()] == ["m99"]
    pump = asyncio.create_task(sub.pump())
    await asyncio.wait_for(got_one.wait(), 5)
    pump.cancel()
    assert sent == ["m99"]
