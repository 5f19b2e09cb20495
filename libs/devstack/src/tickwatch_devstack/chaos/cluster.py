"""The processes a chaos run owns and breaks: Apache Kafka, PostgreSQL, Redis, the five services.

Each can be stopped, killed with ``kill -9`` and started again on the same port and the same
data, which is what a fault needs. The broker is the embedded one of
``make run`` (``infra.start_kafka``), in the run's own folder and on its own ports, its log
formatted once and kept across restarts: no shared broker is ever touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from tickwatch_devstack.infra import (
    Server,
    _die_with_parent,
    start_kafka,
    start_postgres,
    start_redis,
)
from tickwatch_devstack.services import package, port_variable


class Broker:
    """The run's own Apache Kafka (``infra.start_kafka``), whose log survives ``kill -9``."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.server: Server | None = None

    @property
    def bootstrap(self) -> str:
        return f"localhost:{self.port}"

    def start(self) -> Server:
        """Start, or start again on the same log, port and controller port."""
        self.server = start_kafka(self.data_dir, self.port)
        return self.server

    def kill(self) -> None:
        if self.server is not None:
            kill_group(self.server.proc)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """``kill -9`` of the process and its group: no flush, no goodbye."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def restart_postgres(server: Server) -> Server:
    server.stop()
    return start_postgres(server.log_path.parent, server.port)


def start_redis_again(server: Server) -> Server:
    return start_redis(server.log_path.parent, server.port)


class Services:
    """The five services as processes, each with its own environment, port and log file."""

    def __init__(
        self, envs: dict[str, dict[str, str]], ports: dict[str, int], logs: Path, cwd: Path
    ) -> None:
        self.envs, self.ports, self.logs, self.cwd = envs, ports, logs, cwd
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: dict[str, int] = dict.fromkeys(ports, 0)
        logs.mkdir(parents=True, exist_ok=True)

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def start(self, name: str) -> None:
        self.starts[name] += 1
        with self.log_path(name).open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", package(name)],
                env={**self.envs[name], port_variable(name): str(self.ports[name])},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                cwd=self.cwd,  # not the checkout: its .env must not reach the run
            )

    def kill(self, name: str) -> None:
        kill_group(self.procs[name])

    def exited(self) -> dict[str, int]:
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    def stop_all(self, timeout_s: float = 15) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                kill_group(proc)

    async def unready(self, http: aiohttp.ClientSession) -> list[str]:
        """The services whose ``/ready`` does not answer 200 right now."""

        async def check(name: str) -> str | None:
            try:
                url = f"http://127.0.0.1:{self.ports[name]}/ready"
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    return None if resp.status == 200 else name
            except (aiohttp.ClientError, TimeoutError):
                return name

        found = await asyncio.gather(*(check(n) for n in self.ports))
        return [n for n in found if n is not None]
