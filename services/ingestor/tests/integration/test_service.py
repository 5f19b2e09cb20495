"""The ingestor as a process (``python -m tickwatch_ingestor``): fallback, live mode, SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from tickwatch_common.events import Candle
from tickwatch_common.kafka import kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import CANDLES, TICKS
from tickwatch_devstack.infra import free_port
from tickwatch_devstack.testing import wait_until
from tickwatch_ingestor.source_choice import FALLBACK_MESSAGE
from tickwatch_testkit import FakeBinance, FakeCoinGecko
from tickwatch_testkit.topic_reader import reading

pytestmark = pytest.mark.integration

UNREACHABLE = "http://127.0.0.1:9"  # discard port: nothing listens, connections are refused


@contextlib.asynccontextmanager
async def ingestor(
    env: dict[str, str], log_path: Path, *, ready_status: int | None = 200
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """Run the service; wait until /ready answers ``ready_status``; SIGTERM it afterwards."""
    port = free_port()
    with log_path.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tickwatch_ingestor",
            env={**os.environ, **env, "INGESTOR_PORT": str(port)},
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        if ready_status is not None:
            async with aiohttp.ClientSession() as http:

                async def ready() -> bool:
                    assert proc.returncode is None, log_path.read_text()[-3000:]
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(f"http://127.0.0.1:{port}/ready") as resp:
                            body = await resp.json()
                            return resp.status == ready_status and "starting" not in str(body)
                    return False

                try:
                    await wait_until(ready, 30, f"/ready {ready_status}", interval_s=0.05)
                except TimeoutError as exc:
                    raise AssertionError(log_path.read_text()[-3000:]) from exc
        yield proc, port
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def get_json(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.json()


async def test_replay_fallback_engages_when_both_sources_are_unreachable(
    stack: Any, tmp_path: Path
) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,
        "BINANCE_REST_URL": UNREACHABLE,
        "COINGECKO_API_URL": UNREACHABLE,
        "REPLAY_SPEED": "50",
        # The default symbols: no history of them on the session's shared candle topic.
        "REPLAY_HISTORY_HOURS": "0",
    }
    log = tmp_path / "ingestor.log"
    async with reading(stack.kafka_bootstrap_servers, TICKS, {"BTC-USDT", "ETH-USDT"}) as ticks:
        started = time.monotonic()
        async with ingestor(env, log) as (proc, port):
            came_up = time.monotonic() - started
            status, body = await get_json(f"http://127.0.0.1:{port}/ready")
            assert status == 200
            assert body["checks"]["market"]["detail"] == (
                "replay (fallback: neither exchange reachable)"
            )
            seen = await ticks.wait_for(lambda r: any(x["source"] == "replay" for x in r), 10)
            status, _ = await get_json(f"http://127.0.0.1:{port}/health")
            assert status == 200
        assert proc.returncode == 0, "SIGTERM ends the service cleanly"
    assert came_up < 10, f"the probe must be quick; came up in {came_up:.1f}s"
    replayed = [r for r in seen if r["source"] == "replay"]
    assert replayed and all(abs(r["ts_event"] - time.time() * 1000) < 60_000 for r in replayed)
    text = log.read_text()
    assert FALLBACK_MESSAGE in text
    assert text.count("\n") < 40, "one log line per event, none per tick"


async def test_without_fallback_an_unreachable_exchange_is_not_ready(
    stack: Any, tmp_path: Path
) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,
        "BINANCE_REST_URL": UNREACHABLE,
        "COINGECKO_API_URL": UNREACHABLE,
        "MARKET_FALLBACK": "none",
    }
    async with ingestor(env, tmp_path / "ingestor.log", ready_status=503) as (_, port):
        status, body = await get_json(f"http://127.0.0.1:{port}/ready")
    assert status == 503
    assert body["checks"]["market"]["ok"] is False
    assert "replay" not in body["checks"]["market"]["detail"]


async def test_live_mode_streams_binance_polls_coingecko_and_backfills_history(
    stack: Any, tmp_path: Path
) -> None:
    base = "T" + uuid.uuid4().hex[:7].upper()
    fake = FakeBinance({f"{base}USDT": (base, "USDT")}, ping_interval_s=0.2)
    gecko = FakeCoinGecko()
    gecko.set_price(f"{base.lower()}-coin", "2.5", "100", "1.25", 1763884790)
    async with fake.running(), gecko.running():
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,
            "SYMBOLS": f"{base}-USDT",
            "BINANCE_WS_URL": fake.ws_url,
            "BINANCE_REST_URL": fake.rest_url,
            "COINGECKO_API_URL": gecko.url,
            "COINGECKO_IDS": f"{base}={base.lower()}-coin",
            "COINGECKO_POLL_INTERVAL_S": "0.2",
            "COINGECKO_CALLS_PER_MIN": "600",
            "BACKFILL_DAYS_1M": "1",
            "BACKFILL_DAYS_1H": "2",
            "BACKFILL_DAYS_1D": "3",
        }
        keys = {f"{base}-USDT", f"{base}-USD"}
        async with (
            reading(stack.kafka_bootstrap_servers, TICKS, keys) as ticks,
            reading(stack.kafka_bootstrap_servers, CANDLES, keys) as candles,
            ingestor(env, tmp_path / "ingestor.log") as (_, port),
        ):
            _, body = await get_json(f"http://127.0.0.1:{port}/ready")
            assert body["checks"]["market"]["detail"].startswith("live: binance (1/1 connections")
            agg_id = await fake.agg_trade(f"{base}USDT", "0.12345678")
            await ticks.wait_for(
                lambda r: (
                    any(x.get("trade_id") == agg_id for x in r)
                    and any(x["source"] == "coingecko" for x in r)
                )
            )
            expected = 1439 + 47 + 2  # 1 day of 1m, 2 of 1h, 3 of 1d (closed ones)
            await candles.wait_for(
                lambda r: sum(x["source"] == "binance" for x in r) >= expected, 20
            )
        by_interval: dict[str, int] = {}
        for r in candles.records:
            if r["source"] == "binance":
                by_interval[r["interval"]] = by_interval.get(r["interval"], 0) + 1
        assert by_interval["1m"] >= 1439 and by_interval["1h"] >= 47 and by_interval["1d"] >= 2
        usd = [r for r in ticks.records if r["source"] == "coingecko"]
        assert usd[0]["symbol"] == f"{base}-USD" and usd[0]["price"] == "2.5"


async def test_the_backfill_command_publishes_history_and_exits(stack: Any, tmp_path: Path) -> None:
    base = "T" + uuid.uuid4().hex[:7].upper()
    fake = FakeBinance({f"{base}USDT": (base, "USDT")})
    async with (
        fake.running(),
        reading(stack.kafka_bootstrap_servers, CANDLES, {f"{base}-USDT"}) as candles,
    ):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tickwatch_ingestor",
            "backfill",
            "--symbols",
            f"{base}-USDT,NOPE-USDT",
            "--interval",
            "1h",
            "--days",
            "50",
            env={
                **os.environ,
                "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,
                "BINANCE_REST_URL": fake.rest_url,
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()[-2000:]
        await candles.wait_for(lambda r: len(r) >= 50 * 24 - 1)
    assert "published 1199 closed 1h candles for 1 symbol" in out.decode() or (
        "published 1200 closed 1h candles" in out.decode()
    ), out.decode()
    assert "not traded on Binance, skipped: NOPE-USDT" in err.decode()
    assert "backfill 1h" in err.decode()  # the progress bar
    pages = [q for path, q, _ in fake.rest_requests if path == "/api/v3/klines"]
    assert len(pages) == 2  # 1200 hours: a full page of 1000, then the rest


async def logged(path: Path, event: str, timeout_s: float = 15) -> dict[str, Any]:
    """The first JSON log line of ``event`` the process at ``path`` wrote, once it has."""

    def found() -> dict[str, Any] | None:
        for line in path.read_text().splitlines():
            if f'"event": "{event}"' in line:
                return cast(dict[str, Any], json.loads(line))
        return None

    await wait_until(lambda: found() is not None, timeout_s, event, interval_s=0.05)
    line = found()
    assert line is not None
    return line


async def test_replay_mode_publishes_its_history_once_and_a_restart_only_fills_the_gap(
    stack: Any, tmp_path: Path
) -> None:
    """Run 1 finds an older run's candle 90 minutes back on the topic: it publishes only the
    minutes after it, opening at its close; run 2, seconds later, only the minute or two since."""
    symbol = "T" + uuid.uuid4().hex[:7].upper() + "-USDT"  # borrows a recorded movement
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,
        "MARKET_SOURCES": "replay",
        "SYMBOLS": symbol,
        "REPLAY_HISTORY_HOURS": "3",
    }
    minute = 60_000
    now = int(time.time() * 1000)
    older = now - now % minute - 90 * minute
    kafka = KafkaSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers)
    async with reading(stack.kafka_bootstrap_servers, CANDLES, {symbol}) as candles:
        async with kafka_producer(kafka, linger_ms=0) as publisher:
            price = Decimal("123.45")
            shown = Candle(
                symbol=symbol,
                source="replay",
                interval="1m",
                open_time=older,
                close_time=older + minute - 1,
                open=price,
                high=price,
                low=price,
                close=price,
                volume=Decimal(1),
                trades=1,
                closed=True,
            )
            await publisher.publish(CANDLES, shown, key=symbol)
        runs = []
        for run in (1, 2):
            log = tmp_path / f"ingestor-{run}.log"
            async with ingestor(env, log):
                runs.append(await logged(log, "replay_history_published"))
        first, second = runs
        end = second["ends_at"]

        def replay_minutes(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [r for r in records if (r["source"], r["interval"]) == ("replay", "1m")]

        def covered(records: list[dict[str, Any]]) -> bool:
            opens = {r["open_time"] for r in replay_minutes(records) if r["open_time"] < end}
            return opens == set(range(older, end, minute))

        seen = replay_minutes(await candles.wait_for(covered, 10))
    assert first["continued_from_topic"] == second["continued_from_topic"] == [symbol]
    assert first["candles"] == (first["ends_at"] - older) // minute - 1, "none before its candle"
    assert second["candles"] <= 2, "a restart seconds later fills only the minutes in between"
    opens = [r["open_time"] for r in seen]
    assert len(opens) == len(set(opens)), "no minute published twice"
    assert all(r["closed"] for r in seen)
    assert opens[: first["candles"] + 1] == list(range(older, first["ends_at"], minute))
    assert seen[1]["open"] == "123.45", "run 1 continues where the older run's chart ended"
    assert first["seconds"] < 10 and second["seconds"] < 10
    by_open = {r["open_time"]: r for r in seen}
    if second["candles"]:
        gap = end - second["candles"] * minute
        assert by_open[gap]["open"] == by_open[gap - minute]["close"], "continues where shown"
