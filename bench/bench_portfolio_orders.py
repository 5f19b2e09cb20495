"""Market orders through the gateway: ``POST /api/v1/portfolio/trades`` at 16 connections, each
a buy or a sell that the portfolio service fills in one PostgreSQL transaction, next to a bare
aiohttp handler that parses the same JSON body and answers a JSON object, measured in the same
run with the same load generator.

    uv run python bench/bench_portfolio_orders.py [--seconds 5] [--connections 16]

Then the same with a fresh ``Idempotency-Key`` on every order (those take the locked
transaction: the key's first answer is read and written with the order).

Starts its own servers (start_stack), the portfolio service and the gateway as processes and
the bare handler in another; publishes the symbol's trading rules and a fresh tick as the
ingestor would. Each connection trades for its own user (one account row locked per order, as
users do; 16 users, so orders of different users do not queue on one lock). Prints orders/s,
p50/p99, the ratio to the bare handler, the CPU each process spent per order (PostgreSQL's
backends summed), the orders/s the busiest service process allows with a core of its own, and
the cores all of them keep busy at 1,000 orders/s. On a 2-core machine the load generator, the gateway,
the portfolio service, PostgreSQL and the broker share the cores: the ratio is the figure to
read, the absolute numbers are this machine's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import uvloop
from aiohttp import web
from tickwatch_common.events import Instrument, Tick
from tickwatch_common.kafka import ensure_topics, kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import INSTRUMENTS, TICKS
from tickwatch_devstack.infra import free_port, start_stack
from tickwatch_devstack.services import service_process

SYMBOL = "BTC-USDT"
PRICE = "50000.00"


TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _stats() -> dict[int, list[str]]:
    """Every live process's /proc stat fields after its name (ppid at 1, pgrp at 2, utime and
    stime at 11 and 12)."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
    return stats


def cpu_seconds(group: int) -> float:
    """CPU time (user + system) of every live process in process group ``group`` (a service
    started in its own session)."""
    ticks = sum(int(f[11]) + int(f[12]) for f in _stats().values() if int(f[2]) == group)
    return ticks / TICKS_PER_S


def postmaster(port: int) -> int | None:
    """The PostgreSQL server listening on ``port`` (its -p argument)."""
    for pid in _stats():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            argv[0].endswith(b"postgres")
            and b"-p" in argv
            and argv[argv.index(b"-p") + 1] == str(port).encode()
        ):
            return pid
    return None


def postgres_cpu_seconds(pid: int) -> float:
    """CPU time of the postmaster and its backends (children, live ones only)."""
    stats = _stats()
    mine = [f for p, f in stats.items() if p == pid or int(f[1]) == pid]
    return sum(int(f[11]) + int(f[12]) for f in mine) / TICKS_PER_S


def serve_bare(port: int) -> None:
    """The reference: parse the JSON body, answer a JSON object (aiohttp as documented)."""

    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"status": "filled", **body}, status=201)

    app = web.Application()
    app.router.add_post("/api/v1/portfolio/trades", handler)
    web.run_app(
        app, host="127.0.0.1", port=port, access_log=None, print=None, loop=uvloop.new_event_loop()
    )


async def _worker(
    http: aiohttp.ClientSession,
    url: str,
    token: str,
    stop_at: float,
    latencies: list[float],
    errors: list[int],
    keyed: bool,
) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    side = "buy"
    while time.perf_counter() < stop_at:
        body = json.dumps({"symbol": SYMBOL, "side": side, "quantity": "0.001"})
        if keyed:
            headers["Idempotency-Key"] = uuid.uuid4().hex
        started = time.perf_counter()
        async with http.post(url, data=body, headers=headers) as resp:
            await resp.read()
            if resp.status != 201:
                errors.append(resp.status)
        latencies.append(time.perf_counter() - started)
        side = "sell" if side == "buy" else "buy"


async def load(
    port: int, tokens: list[str], seconds: float, *, keyed: bool = False
) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/api/v1/portfolio/trades"
    latencies: list[float] = []
    errors: list[int] = []
    connector = aiohttp.TCPConnector(limit=len(tokens))
    async with aiohttp.ClientSession(connector=connector) as http:
        stop_at = time.perf_counter() + seconds
        await asyncio.gather(
            *(_worker(http, url, t, stop_at, latencies, errors, keyed) for t in tokens)
        )
    ordered = sorted(latencies)
    return {
        "rps": len(latencies) / seconds,
        "count": len(latencies),
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000,
        "errors": len(errors),
        "error_statuses": sorted(set(errors))[:5],  # type: ignore[dict-item]
    }


async def users(gateway_port: int, n: int) -> list[str]:
    base = f"http://127.0.0.1:{gateway_port}/api/v1"
    tokens = []
    async with aiohttp.ClientSession() as http:
        for _ in range(n):
            creds = {"email": f"bench-{uuid.uuid4().hex[:8]}@example.com", "password": "bench-pw-1"}
            async with http.post(f"{base}/auth/register", json=creds) as r:
                assert r.status == 201, await r.text()
            async with http.post(f"{base}/auth/login", json=creds) as r:
                tokens.append((await r.json())["access_token"])
    return tokens


async def prime(kafka: str, gateway_port: int, token: str) -> None:
    """The symbol's rules and a tick, then wait until an order fills (the service has both)."""
    async with kafka_producer(KafkaSettings(kafka_bootstrap_servers=kafka)) as publisher:
        rules = Instrument(
            symbol=SYMBOL,
            base="BTC",
            quote="USDT",
            source="binance",
            step_size="0.00001",  # type: ignore[arg-type]
            tick_size="0.01",  # type: ignore[arg-type]
            min_notional="5",  # type: ignore[arg-type]
            status="TRADING",
        )
        await publisher.publish(INSTRUMENTS, rules, key=SYMBOL)
        tick = Tick(
            symbol=SYMBOL,
            base="BTC",
            quote="USDT",
            source="replay",
            price=PRICE,  # type: ignore[arg-type]
            volume_24h="1",  # type: ignore[arg-type]
            change_24h_pct="0",  # type: ignore[arg-type]
            # Ahead of now, so the price stays fresh for the whole run.
            ts_event=int(time.time() * 1000) + 600_000,
            ts_ingest=0,
        )
        await publisher.publish(TICKS, tick, key=SYMBOL)
    url = f"http://127.0.0.1:{gateway_port}/api/v1/portfolio/trades"
    body = {"symbol": SYMBOL, "side": "buy", "quantity": "0.001"}
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            headers = {"Authorization": f"Bearer {token}"}
            async with http.post(url, json=body, headers=headers) as r:
                if r.status == 201:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError("no order filled within 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        serve_bare(args.bare)
        return
    data_dir = Path(tempfile.mkdtemp(prefix="tickwatch-bench-orders-"))
    broker = {k: v for k, v in os.environ.items() if k == "KAFKA_BOOTSTRAP_SERVERS"}
    stack = start_stack(data_dir, environ=broker)
    try:
        asyncio.run(ensure_topics(stack.kafka_bootstrap_servers))
        ports = {"gateway": free_port(), "portfolio": free_port(), "bare": free_port()}
        env = {
            **os.environ,
            **stack.env(),
            "JWT_SECRET": secrets.token_urlsafe(48),
            "INTERNAL_API_SECRET": secrets.token_urlsafe(48),
            "PORTFOLIO_URL": f"http://127.0.0.1:{ports['portfolio']}",
            "PORTFOLIO_STARTING_CASH": "100000000",
            "RATE_LIMIT_DEFAULT": "100000000/minute",
            "RATE_LIMIT_AUTH": "100000/minute",
            "GATEWAY_HOST": "127.0.0.1",
            "LOG_LEVEL": "WARNING",
        }
        bare = subprocess.Popen([sys.executable, __file__, "--bare", str(ports["bare"])])
        try:
            with (
                service_process(
                    "portfolio", env, ports["portfolio"], log_path=data_dir / "portfolio.log"
                ) as portfolio,
                service_process(
                    "gateway", env, ports["gateway"], log_path=data_dir / "gw.log"
                ) as gateway,
            ):
                tokens = asyncio.run(users(ports["gateway"], args.connections))
                asyncio.run(prime(stack.kafka_bootstrap_servers, ports["gateway"], tokens[0]))
                reference = uvloop.run(load(ports["bare"], tokens, args.seconds))
                meters: dict[str, Callable[[], float]] = {
                    "gateway": lambda: cpu_seconds(gateway.pid),
                    "portfolio": lambda: cpu_seconds(portfolio.pid),
                    "load_generator": time.process_time,
                }
                pg = postmaster(urlsplit(stack.database_url).port or 5432)
                if pg is not None:
                    meters["postgres"] = lambda: postgres_cpu_seconds(pg)
                before = {name: meter() for name, meter in meters.items()}
                orders = uvloop.run(load(ports["gateway"], tokens, args.seconds))
                spent = {name: meter() - before[name] for name, meter in meters.items()}
                keyed = uvloop.run(load(ports["gateway"], tokens, args.seconds, keyed=True))
        finally:
            bare.terminate()
            bare.wait(10)
        cpu_us = {name: seconds / orders["count"] * 1e6 for name, seconds in spent.items()}
        # The services are one process each: the busiest bounds orders/s even with a core of its
        # own each (the gateway scales out; the portfolio, which holds the limit book, does not).
        busiest = max(cpu_us[name] for name in ("gateway", "portfolio"))
        result = {
            "connections": args.connections,
            "bare_json_rps": round(reference["rps"]),
            "bare_json_p99_ms": round(reference["p99_ms"], 2),
            "orders_rps": round(orders["rps"]),
            "orders_p50_ms": round(orders["p50_ms"], 2),
            "orders_p99_ms": round(orders["p99_ms"], 2),
            "orders_errors": orders["errors"],
            "orders_error_statuses": orders["error_statuses"],
            "orders_vs_bare": round(orders["rps"] / reference["rps"], 3),
            # CPU per order, by process (PostgreSQL: the postmaster and all its backends); with
            # every process on the same cores, their sum bounds orders/s at cores / sum.
            "cpu_us_per_order": {name: round(us) for name, us in cpu_us.items()},
            "orders_rps_bound_one_core_per_process": round(1e6 / busiest),
            "cores_busy_at_1000_orders_per_s": round(sum(cpu_us.values()) / 1000, 2),
            "keyed_orders_rps": round(keyed["rps"]),
            "keyed_orders_p99_ms": round(keyed["p99_ms"], 2),
            "keyed_orders_errors": keyed["errors"],
            "target": ">= 1000 orders/s and p99 < 50 ms with the cores it needs",
        }
        print(json.dumps(result, indent=2))
    finally:
        stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
