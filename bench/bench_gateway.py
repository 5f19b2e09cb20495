"""Gateway benchmark: cached GET /api/v1/prices/{symbol} next to a bare aiohttp JSON handler,
measured in the same run with the same load generator; then WebSocket fan-out.

    uv run python bench/bench_gateway.py [--rounds 3] [--seconds 4] [--connections 32]
                                         [--ws-clients 10000] [--ws-ticks 10]

Starts its own infrastructure (start_stack: Tansu, PostgreSQL, Redis; or, for the broker, the one
in KAFKA_BOOTSTRAP_SERVERS, e.g. Apache Kafka from `make kafka-up`) under a temporary folder,
the gateway as a process (every middleware on: request ids, CORS, auth, rate limits counted in
Redis with a budget too large to trip), and two bare aiohttp apps in other processes that answer
the same body: ``json``, the JSON handler as aiohttp documents it (``web.json_response(data)``,
the dict encoded per request), the baseline of the ratio the issue sets; and ``bytes``, a
stricter floor that answers bytes encoded once, printed next to it. The load generator is a small keep-alive HTTP/1.1 client on raw asyncio streams,
so it costs far less per request than either server. On a 2-core machine the generator and the
server share the cores; the ratio is the figure to read, the absolute numbers are this machine's.
Both servers run on uvloop, as the services do. The WebSocket phase starts ``--ws-replicas``
gateways on one port (GATEWAY_REUSE_PORT) and 10,000 raw-protocol clients in two processes; it
prints p50/p99 publish-to-client, the last client of each tick, memory per connection and each
replica's own fan-out time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import aiohttp
import uvloop
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


def serve_bare(port: int, kind: str) -> None:
    """``json``: the handler as aiohttp documents it, ``web.json_response(data)``, which encodes
    the dict on every request. ``bytes``: a stricter floor that answers bytes encoded once."""
    body = json.dumps(BODY, separators=(",", ":")).encode()

    async def json_handler(_: web.Request) -> web.Response:
        return web.json_response(BODY)

    async def bytes_handler(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v1/prices/{symbol}", json_handler if kind == "json" else bytes_handler)
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),  # as the services run
    )


BARE_KINDS = ("json", "bytes")


def wait_listening(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {port}")
        time.sleep(0.05)


# ---------------------------------------------------------------- the load generator


async def _connection(
    port: int,
    path: str,
    stop_at: float,
    latencies: list[float],
    errors: list[int],
    headers: str = "",
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode()
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


async def load(
    port: int, path: str, seconds: float, connections: int, headers: str = ""
) -> dict[str, float]:
    warm: list[float] = []
    await asyncio.gather(
        *(
            _connection(port, path, time.perf_counter() + 1, warm, [], headers)
            for _ in range(connections)
        )
    )
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    await asyncio.gather(
        *(
            _connection(port, path, started + seconds, latencies, errors, headers)
            for _ in range(connections)
        )
    )
    elapsed = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100, method="inclusive")
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


class _WsClient(asyncio.Protocol):
    """A minimal WebSocket client for the load side: one handshake, one masked subscribe frame,
    then server frames parsed straight from the bytes. aiohttp's client costs tens of µs a
    message, so 5,000 of them in one process would measure the client, not the gateway."""

    def __init__(self, ready: asyncio.Future[None], done: asyncio.Future[None], last: bytes):
        self.ready, self.done, self.last = ready, done, last
        self.buffer = bytearray()
        self.upgraded = False
        self.primed = False
        self.received: list[tuple[int, bytes]] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        transport.write(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )

    def data_received(self, data: bytes) -> None:
        arrived = time.time_ns()
        if self.primed:  # the measured path: keep the bytes, parse after the run
            self.received.append((arrived, data))
            if self.last in data and not self.done.done():
                self.done.set_result(None)
            return
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buffer.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(RuntimeError(bytes(self.buffer[:200]).decode()))
                return
            del self.buffer[: end + 4]
            self.upgraded = True
            payload = json.dumps({"op": "subscribe", "channels": ["prices:*"]}).encode()
            # Client frames must be masked; an all-zero mask leaves the payload as it is.
            assert self.transport is not None
            self.transport.write(bytes((0x81, 0x80 | len(payload))) + b"\0\0\0\0" + payload)
        for payload in _frames(self.buffer):
            # The "subscribed" reply, then the snapshot price; what follows is measured.
            if f"prices:{SYMBOL}".encode() in payload and b'"op"' not in payload:
                self.primed = True
                self.ready.set_result(None)

    def latencies(self) -> list[tuple[int, float]]:
        """(publish time, publish → arrival in ms) per frame; the publish time rides along in
        volume_24h."""
        out = []
        for arrived, data in self.received:
            for payload in _frames(bytearray(data)):
                at = payload.find(b'"volume_24h":"')
                if at >= 0:
                    sent_ns = int(payload[at + 14 : payload.index(b'"', at + 14)])
                    out.append((sent_ns, (arrived - sent_ns) / 1e6))
        return out


def _frames(buffer: bytearray) -> Iterator[bytes]:
    """Whole server frames' payloads, taken off the front of ``buffer``."""
    while len(buffer) >= 2:
        size, start = buffer[1] & 0x7F, 2
        if size == 126:
            if len(buffer) < 4:
                return
            size, start = int.from_bytes(buffer[2:4], "big"), 4
        elif size == 127:
            if len(buffer) < 10:
                return
            size, start = int.from_bytes(buffer[2:10], "big"), 10
        if len(buffer) < start + size:
            return
        payload = bytes(buffer[start : start + size])
        del buffer[: start + size]
        yield payload


async def _ws_clients(port: int, clients: int, ticks: int, pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    last = f'"price":"68000.{ticks - 1:02d}"'.encode()
    protocols: list[_WsClient] = []
    for start in range(0, clients, 250):
        batch = []
        for _ in range(start, min(clients, start + 250)):
            proto = _WsClient(loop.create_future(), loop.create_future(), last)
            batch.append(loop.create_connection(lambda p=proto: p, "127.0.0.1", port))
            protocols.append(proto)
        await asyncio.gather(*batch)
    await asyncio.wait_for(asyncio.gather(*(p.ready for p in protocols)), 120)
    pipe.send("ready")
    # A slow client may miss middle ticks (conflation), never the last one.
    await asyncio.wait_for(asyncio.gather(*(p.done for p in protocols)), 300)
    for proto in protocols:
        assert proto.transport is not None
        proto.transport.close()
    pipe.send([lat for proto in protocols for lat in proto.latencies()])


def ws_client_process(port: int, clients: int, ticks: int, pipe: Connection) -> None:
    uvloop.run(_ws_clients(port, clients, ticks, pipe))


def ws_fanout(
    port: int,
    ops_port: int,
    pids: list[int],
    kafka: str,
    clients: int,
    ticks: int,
    processes: int = 2,
) -> dict[str, object]:
    """Clients in ``processes`` worker processes (a single Python client is slower than the
    server it measures); latency is publish → received, both on this machine's clock."""
    rss_before = sum(rss_kib(pid) for pid in pids)
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
    rss_after = sum(rss_kib(pid) for pid in pids)

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
    samples: list[tuple[int, float]] = []
    for proc, pipe in workers:
        if not pipe.poll(300):
            raise RuntimeError("WebSocket clients did not finish")
        samples.extend(pipe.recv())
        proc.join(30)
    latencies = [ms for _, ms in samples]
    by_tick: dict[int, list[float]] = {}
    for sent, ms in samples:
        by_tick.setdefault(sent, []).append(ms)
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "clients": clients,
        "ticks": ticks,
        "deliveries": len(latencies),
        "conflated": clients * ticks - len(latencies),
        "p50_ms": q[49],
        "p99_ms": q[98],
        "max_ms": max(latencies),
        "last_client_ms_per_tick": [round(max(by_tick[t]), 1) for t in sorted(by_tick)],
        "rss_per_connection_kib": (rss_after - rss_before) / clients,
        "replicas": len(pids),
        "server_fanout_ms_mean_per_replica": server_fanout_mean_ms(ops_port, len(pids)),
    }


def server_fanout_mean_ms(ops_port: int, replicas: int) -> list[float]:
    """Mean time each replica took to hand one tick to its subscribers, from its /metrics (on
    the ops port, GATEWAY_OPS_PORT). The replicas share that port too, so scrape on fresh
    connections until each has answered (told apart by their process start times)."""
    seen: dict[str, float] = {}
    for _ in range(50 * replicas):
        with urllib.request.urlopen(f"http://127.0.0.1:{ops_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        total = count = 0.0
        started = ""
        for line in text.splitlines():
            if line.startswith("tickwatch_gateway_ws_fanout_seconds_sum"):
                total = float(line.split()[-1])
            elif line.startswith("tickwatch_gateway_ws_fanout_seconds_count"):
                count = float(line.split()[-1])
            elif line.startswith("process_start_time_seconds"):
                started = line.split()[-1]
        seen[started] = round(total / count * 1000, 1) if count else float("nan")
        if len(seen) == replicas:
            break
    return list(seen.values())


# ---------------------------------------------------------------- the run


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a listening TCP socket on ``port`` (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            cols = row.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port and cols[9] in inodes:
                return True
    return False


def ws_phase(
    kafka: str, env: dict[str, str], data_dir: Path, args: argparse.Namespace
) -> dict[str, object]:
    """WebSocket fan-out through ``--ws-replicas`` gateway processes sharing one port
    (GATEWAY_REUSE_PORT): the kernel spreads the clients over them, as it would over the
    replicas of a deployment on one host, so the fan-out uses every core."""
    port, ops_port = free_port(), free_port()
    replica_env = {**env, "GATEWAY_REUSE_PORT": "true", "GATEWAY_OPS_PORT": str(ops_port)}
    with contextlib.ExitStack() as replicas:
        pids = []
        for n in range(args.ws_replicas):
            log = data_dir / f"gateway-ws-{n}.log"
            proc = replicas.enter_context(
                service_process("gateway", replica_env, port, log_path=log)
            )
            deadline = time.monotonic() + 30
            while not listens(proc.pid, port):  # /ready may have been answered by another one
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gateway replica {n} never listened (log: {log})")
                time.sleep(0.05)
            pids.append(proc.pid)
        uvloop.run(prime(kafka, port))
        return ws_fanout(port, ops_port, pids, kafka, args.ws_clients, args.ws_ticks)


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


AUTH_CONNECTIONS = 15


async def alerts_user(gateway_port: int, alerts: int = 10) -> str:
    """A user with ``alerts`` alerts; the ``Authorization`` header line of their access token."""
    base = f"http://127.0.0.1:{gateway_port}/api/v1"
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    credentials = {"email": email, "password": "bench-password"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/auth/register", json=credentials) as r:
            assert r.status == 201, await r.text()
        async with http.post(f"{base}/auth/login", json=credentials) as r:
            token = (await r.json())["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        for n in range(alerts):
            body = {"symbol": SYMBOL, "condition": "above", "target_price": str(100_000 + n)}
            async with http.post(f"{base}/alerts", json=body, headers=auth) as r:
                assert r.status == 201, await r.text()
    return f"Authorization: Bearer {token}\r\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4, help="per round and server")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--ws-clients", type=int, default=10000)
    parser.add_argument("--ws-ticks", type=int, default=10)
    parser.add_argument("--ws-replicas", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--bare", help=argparse.SUPPRESS)  # kind:port, in a child process
    args = parser.parse_args()
    if args.bare:
        kind, port = args.bare.split(":")
        serve_bare(int(port), kind)
        return

    data_dir = Path(tempfile.mkdtemp(prefix="tickwatch-bench-"))
    # The servers are started here, except a broker named in KAFKA_BOOTSTRAP_SERVERS (for example
    # `make kafka-up`: Apache Kafka, the production broker).
    broker = {k: v for k, v in os.environ.items() if k == "KAFKA_BOOTSTRAP_SERVERS"}
    stack = start_stack(data_dir, environ=broker)
    try:
        asyncio.run(ensure_topics(stack.kafka_bootstrap_servers))
        env = {
            **os.environ,
            **stack.env(),
            "JWT_SECRET": secrets.token_urlsafe(48),
            "RATE_LIMIT_DEFAULT": "100000000/minute",
            "GATEWAY_HOST": "127.0.0.1",
            "LOG_LEVEL": "WARNING",
            "WS_HEARTBEAT_S": "60",
        }
        gw_port = free_port()
        bare_ports = {kind: free_port() for kind in BARE_KINDS}
        bares = [
            subprocess.Popen([sys.executable, __file__, "--bare", f"{kind}:{port}"])
            for kind, port in bare_ports.items()
        ]
        try:
            with service_process("gateway", env, gw_port, log_path=data_dir / "gateway.log"):
                asyncio.run(prime(stack.kafka_bootstrap_servers, gw_port))
                auth = asyncio.run(alerts_user(gw_port))
                for port in bare_ports.values():
                    wait_listening(port)
                path = f"/api/v1/prices/{SYMBOL}"
                rounds = []
                for _ in range(args.rounds):  # alternate, so a noisy neighbour hits them all
                    runs = {
                        kind: uvloop.run(load(port, path, args.seconds, args.connections))
                        for kind, port in bare_ports.items()
                    }
                    gw_run = uvloop.run(load(gw_port, path, args.seconds, args.connections))
                    row: dict[str, float] = {}
                    for kind, run in runs.items():
                        row[f"bare_{kind}_rps"] = round(run["rps"])
                        row[f"bare_{kind}_p99_ms"] = round(run["p99_ms"], 2)
                    row |= {
                        "gateway_rps": round(gw_run["rps"]),
                        "gateway_p50_ms": round(gw_run["p50_ms"], 2),
                        "gateway_p99_ms": round(gw_run["p99_ms"], 2),
                        "gateway_errors": gw_run["errors"],
                    }
                    for kind, run in runs.items():
                        row[f"ratio_vs_{kind}"] = round(gw_run["rps"] / run["rps"], 3)
                    # An authenticated cached read beside the public one, at 15 connections.
                    public = uvloop.run(load(gw_port, path, args.seconds, AUTH_CONNECTIONS))
                    private = uvloop.run(
                        load(gw_port, "/api/v1/alerts", args.seconds, AUTH_CONNECTIONS, auth)
                    )
                    row |= {
                        "public_price_rps": round(public["rps"]),
                        "public_price_p99_ms": round(public["p99_ms"], 2),
                        "auth_alerts_rps": round(private["rps"]),
                        "auth_alerts_p99_ms": round(private["p99_ms"], 2),
                        "auth_alerts_errors": private["errors"],
                        "auth_vs_public": round(private["rps"] / public["rps"], 3),
                    }
                    rounds.append(row)
                results: dict[str, object] = {"http_rounds": rounds}
                for kind in BARE_KINDS:
                    results[f"ratio_vs_{kind}_median"] = statistics.median(
                        r[f"ratio_vs_{kind}"] for r in rounds
                    )
                results["gateway_p99_ms_worst"] = max(r["gateway_p99_ms"] for r in rounds)
                results["auth_vs_public_median"] = statistics.median(
                    r["auth_vs_public"] for r in rounds
                )
        finally:
            for bare in bares:
                bare.terminate()
                bare.wait(10)
        if args.ws_clients:
            results["ws_fanout"] = ws_phase(stack.kafka_bootstrap_servers, env, data_dir, args)
        print(json.dumps(results, indent=2))
    finally:
        stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
