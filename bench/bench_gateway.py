"""Gateway benchmark: cached GET /api/v1/prices/{symbol} next to a bare aiohttp JSON handler,
measured in the same run with the same load generator; then WebSocket fan-out.

    uv run python bench/bench_gateway.py [--rounds 3] [--seconds 4] [--connections 32]
                                         [--ws-clients 10000] [--ws-ticks 10]

Starts its own infrastructure (start_stack: Tansu, PostgreSQL, Redis) under a temporary folder,
the gateway as a process (every middleware on: request ids, CORS, auth, rate limits counted in
Redis with a budget too large to trip), and a bare aiohttp app in another process that answers
the same body. The load generator is a small keep-alive HTTP/1.1 client on raw asyncio streams,
so it costs far less per request than either server. On a 2-core machine the generator and the
server share the cores; the ratio is the figure to read, the absolute numbers are this machine's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from multiprocessing.connection import Connection
from pathlib import Path

import aiohttp
from aiohttp import web
from tickwatch_common.events import Tick
from tickwatch_common.kafka import ensure_topics, kafka_producer
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import TICKS
from tickwatch_devstack.infra import free_port, start_stack
from tickwatch_devstack.services import service_process

SYMBOL = "BTC-USDT"
BODY = {
    "symbol": SYMBOL,
    "price": "67012.34",
    "source": "replay",
    "ts": "2026-11-23T10:00:00.000Z",
    "change_24h_pct": "1.5",
    "volume_24h": "12345.6",
}


# ---------------------------------------------------------------- the bare baseline server


def serve_bare(port: int) -> None:
    body = json.dumps(BODY, separators=(",", ":")).encode()

    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v1/prices/{symbol}", handler)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# ---------------------------------------------------------------- the load generator


async def _connection(
    port: int, path: str, stop_at: float, latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(1)
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


async def load(port: int, path: str, seconds: float, connections: int) -> dict[str, float]:
    warm: list[float] = []
    await asyncio.gather(
        *(_connection(port, path, time.perf_counter() + 1, warm, []) for _ in range(connections))
    )
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    await asyncio.gather(
        *(_connection(port, path, started + seconds, latencies, errors) for _ in range(connections))
    )
    elapsed = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100)
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "rps": len(latencies) / elapsed,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
    }


# ---------------------------------------------------------------- WebSocket fan-out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _ws_clients(port: int, clients: int, ticks: int, pipe: Connection) -> None:
    last_price = f'"price":"68000.{ticks - 1:02d}"'
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        sockets = []
        for start in range(0, clients, 250):
            batch = await asyncio.gather(
                *(
                    http.ws_connect(f"http://127.0.0.1:{port}/ws")
                    for _ in range(start, min(clients, start + 250))
                )
            )
            for ws in batch:
                await ws.send_json({"op": "subscribe", "channels": ["prices:*"]})
            sockets.extend(batch)
        for ws in sockets:  # the "subscribed" reply and the snapshot price
            while f"prices:{SYMBOL}" not in (await ws.receive(timeout=60)).data:
                pass
        pipe.send("ready")

        async def reader(ws: aiohttp.ClientWebSocketResponse) -> None:
            """Read until the last tick; a slow client may get fewer (conflation)."""
            while True:
                msg = await ws.receive(timeout=120)
                arrived = time.time_ns()
                # The publish time rides along in volume_24h; cut it out without a JSON parse.
                at = msg.data.find('"volume_24h":"')
                if at >= 0:
                    sent_ns = int(msg.data[at + 14 : msg.data.index('"', at + 14)])
                    latencies.append((arrived - sent_ns) / 1e6)
                    if last_price in msg.data:
                        return

        await asyncio.gather(*(reader(ws) for ws in sockets))
        for ws in sockets:
            await ws.close()
    pipe.send(latencies)


def ws_client_process(port: int, clients: int, ticks: int, pipe: Connection) -> None:
    asyncio.run(_ws_clients(port, clients, ticks, pipe))


def ws_fanout(
    port: int, pid: int, kafka: str, clients: int, ticks: int, processes: int = 2
) -> dict[str, float]:
    """Clients in ``processes`` worker processes (a single Python client is slower than the
    server it measures); latency is publish → received, both on this machine's clock."""
    rss_before = rss_kib(pid)
    ctx = multiprocessing.get_context("spawn")
    workers = []
    for n in range(processes):
        ours, theirs = ctx.Pipe()
        share = clients // processes + (1 if n < clients % processes else 0)
        proc = ctx.Process(target=ws_client_process, args=(port, share, ticks, theirs))
        proc.start()
        workers.append((proc, ours))
    for _, pipe in workers:
        if not pipe.poll(300) or pipe.recv() != "ready":
            raise RuntimeError("WebSocket clients did not connect")
    rss_after = rss_kib(pid)

    async def publish() -> None:
        settings = KafkaSettings(kafka_bootstrap_servers=kafka)
        async with kafka_producer(settings) as publisher:
            for i in range(ticks):
                tick = Tick(
                    symbol=SYMBOL,
                    base="BTC",
                    quote="USDT",
                    source="replay",
                    price=f"68000.{i:02d}",
                    volume_24h=str(time.time_ns()),
                    ts_event=int(time.time() * 1000) + 10_000_000 + i,
                    ts_ingest=0,
                )
                await publisher.publish(TICKS, tick, key=SYMBOL)
                await asyncio.sleep(1)  # one tick a second: latency, not throughput

    asyncio.run(publish())
    latencies: list[float] = []
    for proc, pipe in workers:
        if not pipe.poll(300):
            raise RuntimeError("WebSocket clients did not finish")
        latencies.extend(pipe.recv())
        proc.join(30)
    q = statistics.quantiles(latencies, n=100)
    return {
        "clients": clients,
        "ticks": ticks,
        "deliveries": len(latencies),
        "conflated": clients * ticks - len(latencies),
        "p50_ms": q[49],
        "p99_ms": q[98],
        "max_ms": max(latencies),
        "rss_per_connection_kib": (rss_after - rss_before) / clients,
        "server_fanout_ms_mean": server_fanout_mean_ms(port),
    }


def server_fanout_mean_ms(port: int) -> float:
    """Mean time the gateway took to hand one tick to every subscriber, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("tickwatch_gateway_ws_fanout_seconds_sum"):
            total = float(line.split()[-1])
        elif line.startswith("tickwatch_gateway_ws_fanout_seconds_count"):
            count = float(line.split()[-1])
    return total / count * 1000 if count else float("nan")


# ---------------------------------------------------------------- the run


async def prime(kafka: str, gateway_port: int) -> None:
    settings = KafkaSettings(kafka_bootstrap_servers=kafka)
    async with kafka_producer(settings) as publisher:
        tick = Tick(
            symbol=SYMBOL,
            base="BTC",
            quote="USDT",
            source="replay",
            price=BODY["price"],
            volume_24h=BODY["volume_24h"],
            change_24h_pct=BODY["change_24h_pct"],
            ts_event=int(time.time() * 1000) + 5_000_000,
            ts_ingest=0,
        )
        await publisher.publish(TICKS, tick, key=SYMBOL)
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            async with http.get(f"http://127.0.0.1:{gateway_port}/api/v1/prices/{SYMBOL}") as r:
                if r.status == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError("the gateway never served the primed price")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4, help="per round and server")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--ws-clients", type=int, default=10000)
    parser.add_argument("--ws-ticks", type=int, default=10)
    parser.add_argument("--bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        serve_bare(args.bare)
        return

    data_dir = Path(tempfile.mkdtemp(prefix="tickwatch-bench-"))
    stack = start_stack(data_dir, environ={})
    try:
        asyncio.run(ensure_topics(stack.kafka_bootstrap_servers))
        env = {
            **os.environ,
            **stack.env(),
            "JWT_SECRET": uuid.uuid4().hex * 2,
            "RATE_LIMIT_DEFAULT": "100000000/minute",
            "GATEWAY_HOST": "127.0.0.1",
            "LOG_LEVEL": "WARNING",
            "WS_HEARTBEAT_S": "60",
        }
        gw_port, bare_port = free_port(), free_port()
        bare = subprocess.Popen([sys.executable, __file__, "--bare", str(bare_port)])
        try:
            with service_process("gateway", env, gw_port, log_path=data_dir / "gateway.log") as gw:
                asyncio.run(prime(stack.kafka_bootstrap_servers, gw_port))
                path = f"/api/v1/prices/{SYMBOL}"
                rounds = []
                for _ in range(args.rounds):  # alternate, so a noisy neighbour hits both
                    bare_run = asyncio.run(load(bare_port, path, args.seconds, args.connections))
                    gw_run = asyncio.run(load(gw_port, path, args.seconds, args.connections))
                    rounds.append(
                        {
                            "bare_rps": round(bare_run["rps"]),
                            "bare_p99_ms": round(bare_run["p99_ms"], 2),
                            "gateway_rps": round(gw_run["rps"]),
                            "gateway_p50_ms": round(gw_run["p50_ms"], 2),
                            "gateway_p99_ms": round(gw_run["p99_ms"], 2),
                            "gateway_errors": gw_run["errors"],
                            "ratio": round(gw_run["rps"] / bare_run["rps"], 3),
                        }
                    )
                bare.terminate()
                results: dict[str, object] = {
                    "http_rounds": rounds,
                    "ratio_median": statistics.median(r["ratio"] for r in rounds),
                    "gateway_p99_ms_worst": max(r["gateway_p99_ms"] for r in rounds),
                }
                if args.ws_clients:
                    results["ws_fanout"] = ws_fanout(
                        gw_port,
                        gw.pid,
                        stack.kafka_bootstrap_servers,
                        args.ws_clients,
                        args.ws_ticks,
                    )
        finally:
            bare.terminate()
            bare.wait(10)
        print(json.dumps(results, indent=2))
    finally:
        stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
