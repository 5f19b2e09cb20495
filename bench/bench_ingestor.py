"""Ingestor throughput: raw Binance aggTrade frames -> normalised ticks -> the broker.

    uv run python bench/bench_ingestor.py [--ticks 200000] [--rounds 3]

Uses the broker named by ``KAFKA_BOOTSTRAP_SERVERS``, or starts its own (the devstack's Tansu,
via ``tickwatch_devstack.infra.start_stack``) in a temporary directory. In the same run and on
the same topic it measures, per round:

- ``ingestor``: the production hot path, ``BinanceSource.on_frame`` (JSON decode, dedupe and gap
  checks, pydantic ``Tick`` validation, serialisation, metrics) into the batching ``EventSink``,
  until the broker has acknowledged every tick;
- ``raw send``: a plain aiokafka producer sending the very bytes the ingestor produced, keyed
  and partitioned the same, with ``send()`` per message and one ``gather`` per chunk;
- ``raw batch``: the same bytes through ``create_batch``/``send_batch`` (the producer's ceiling).

It prints the median ticks/s of each and the ratios. Targets: >= 100k ticks/s, >= 0.7 of raw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from tickwatch_common.kafka import Publisher, ensure_topics, partition_for
from tickwatch_common.topics import TICKS
from tickwatch_ingestor.binance_stream import BinanceSource
from tickwatch_ingestor.feed import BinanceFeed
from tickwatch_ingestor.normalise import Market
from tickwatch_ingestor.settings import Settings
from tickwatch_ingestor.sink import EventSink

BASES = ["BTC", "ETH", "SOL", "BNB", "XRP"]
CHUNK = 4096


def mini_tickers() -> list[str]:
    """One 24 h mini ticker per symbol first, so every tick carries volume and change as live."""
    return [
        json.dumps(
            {
                "stream": f"{base.lower()}usdt@miniTicker",
                "data": {
                    "e": "24hrMiniTicker",
                    "E": 1763884801000,
                    "s": f"{base}USDT",
                    "c": "86412.57000000",
                    "o": "84980.00000000",
                    "h": "87010.00000000",
                    "l": "84500.00000000",
                    "v": "18234.12000000",
                    "q": "1571234567.89000000",
                },
            }
        )
        for base in BASES
    ]


def make_frames(n: int) -> list[str]:
    frames = []
    for i in range(n):
        base = BASES[i % len(BASES)]
        agg = 1_000_000 + i // len(BASES)
        price = f"{86000 + (i % 997) / 100:.8f}"
        frames.append(
            json.dumps(
                {
                    "stream": f"{base.lower()}usdt@aggTrade",
                    "data": {
                        "e": "aggTrade",
                        "E": 1763884800123 + i,
                        "s": f"{base}USDT",
                        "a": agg,
                        "p": price,
                        "q": "0.01250000",
                        "f": agg * 3,
                        "l": agg * 3 + 2,
                        "T": 1763884800120 + i,
                        "m": False,
                        "M": True,
                    },
                },
                separators=(",", ":"),
            )
        )
    return frames


def producer(bootstrap: str) -> AIOKafkaProducer:
    # The same options the service uses (tickwatch_common.kafka.kafka_producer).
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)


async def run_ingestor(
    bootstrap: str, frames: list[str]
) -> tuple[float, list[tuple[bytes, bytes]]]:
    markets = {f"{b}-USDT": Market(f"{b}-USDT", b, "USDT", f"{b}USDT") for b in BASES}
    settings = Settings(kafka_bootstrap_servers=bootstrap, symbols=",".join(markets))
    p = producer(bootstrap)
    await p.start()
    try:
        sink = EventSink(Publisher(p))
        source = BinanceSource(settings, None, None, sink, list(markets))  # type: ignore[arg-type]
        source.feed = BinanceFeed(markets, publish_open_candles=False)
        for raw in mini_tickers():
            await source.on_frame(raw)
        started = time.perf_counter()
        for raw in frames:
            await source.on_frame(raw)
        await sink.drain()
        elapsed = time.perf_counter() - started
        assert sink.published == len(frames), (sink.published, len(frames))
    finally:
        await p.stop()
    # What the ingestor produced, for the raw producer to send byte for byte.
    replay_feed = BinanceFeed(markets, publish_open_candles=False)
    for raw in mini_tickers():
        replay_feed.handle(raw, 0)
    out = []
    for raw in frames:
        tick = replay_feed.handle(raw, 1763884800200).tick
        assert tick is not None
        out.append((tick.symbol.encode(), tick.to_bytes()))
    return len(frames) / elapsed, out


async def run_raw_send(bootstrap: str, messages: list[tuple[bytes, bytes]]) -> float:
    p = producer(bootstrap)
    await p.start()
    parts = {k: partition_for(k.decode(), TICKS.partitions) for k, _ in messages[: len(BASES)]}
    try:
        started = time.perf_counter()
        for i in range(0, len(messages), CHUNK):
            futs = [
                await p.send(TICKS.name, value=v, key=k, partition=parts[k])
                for k, v in messages[i : i + CHUNK]
            ]
            await asyncio.gather(*futs)
        elapsed = time.perf_counter() - started
    finally:
        await p.stop()
    return len(messages) / elapsed


async def run_raw_batch(bootstrap: str, messages: list[tuple[bytes, bytes]]) -> float:
    p = producer(bootstrap)
    await p.start()
    parts = {k: partition_for(k.decode(), TICKS.partitions) for k, _ in messages[: len(BASES)]}
    try:
        started = time.perf_counter()
        futs: list[Any] = []
        for i in range(0, len(messages), CHUNK):
            by_part: dict[int, list[tuple[bytes, bytes]]] = {}
            for k, v in messages[i : i + CHUNK]:
                by_part.setdefault(parts[k], []).append((k, v))
            for part, items in by_part.items():
                batch = p.create_batch()
                for k, v in items:
                    if batch.append(key=k, value=v, timestamp=None) is None:
                        batch.close()
                        futs.append(await p.send_batch(batch, TICKS.name, partition=part))
                        batch = p.create_batch()
                        batch.append(key=k, value=v, timestamp=None)
                batch.close()
                futs.append(await p.send_batch(batch, TICKS.name, partition=part))
        await asyncio.gather(*futs)
        elapsed = time.perf_counter() - started
    finally:
        await p.stop()
    return len(messages) / elapsed


async def bench(bootstrap: str, n: int, rounds: int) -> None:
    await ensure_topics(bootstrap)
    frames = make_frames(n)
    # Warm-up: connections, metadata, code paths.
    _, warm = await run_ingestor(bootstrap, frames[:5000])
    await run_raw_send(bootstrap, warm)
    ing: list[float] = []
    raw: list[float] = []
    batch: list[float] = []
    for _ in range(rounds):
        rate, messages = await run_ingestor(bootstrap, frames)
        ing.append(rate)
        raw.append(await run_raw_send(bootstrap, messages))
        batch.append(await run_raw_batch(bootstrap, messages))
    mi, mr, mb = statistics.median(ing), statistics.median(raw), statistics.median(batch)
    size = sum(len(v) for _, v in messages) / len(messages)
    print(f"ticks per round: {n}, rounds: {rounds}, tick size: {size:.0f} B, broker: {bootstrap}")
    print(f"{'path':<44}{'ticks/s (median)':>18}   rounds")
    print(
        f"{'ingestor: raw aggTrade frame -> broker':<44}{mi:>18,.0f}   {', '.join(f'{x:,.0f}' for x in ing)}"
    )
    print(
        f"{'raw aiokafka send() + gather, same bytes':<44}{mr:>18,.0f}   {', '.join(f'{x:,.0f}' for x in raw)}"
    )
    print(
        f"{'raw aiokafka send_batch(), same bytes':<44}{mb:>18,.0f}   {', '.join(f'{x:,.0f}' for x in batch)}"
    )
    print(f"ratio ingestor / raw send():       {mi / mr:.2f}  (target >= 0.7)")
    print(f"ratio ingestor / raw send_batch(): {mi / mb:.2f}")
    print(f"target >= 100k ticks/s: {'met' if mi >= 100_000 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if bootstrap:
        asyncio.run(bench(bootstrap, args.ticks, args.rounds))
        return
    from tickwatch_devstack.infra import start_stack

    data_dir = Path(tempfile.mkdtemp(prefix="tickwatch-bench-"))
    # Only the broker is needed: name the other servers so start_stack does not start them.
    stack = start_stack(
        data_dir, environ={"DATABASE_URL": "unused", "REDIS_URL": "unused", "SMTP_HOST": "unused"}
    )
    try:
        asyncio.run(bench(stack.kafka_bootstrap_servers, args.ticks, args.rounds))
    finally:
        stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
