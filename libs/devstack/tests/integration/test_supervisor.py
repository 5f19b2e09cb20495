"""``python -m tickwatch_devstack up`` / ``down`` as processes: they start and stop everything."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tickwatch_devstack.infra import free_port
from tickwatch_devstack.supervisor import RunDir

pytestmark = pytest.mark.integration


class Up:
    def __init__(self, proc: subprocess.Popen[str], data: Path, portfolio_port: int) -> None:
        self.proc = proc
        self.data = data
        self.portfolio_port = portfolio_port
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                assert self.proc.poll() is None, "\n".join(self.seen)
                continue
            self.seen.append(line)
            if text in line:
                return
        raise AssertionError(f"{text!r} not printed in {timeout_s}s:\n" + "\n".join(self.seen))


@contextmanager
def running_up(tmp_path: Path) -> Iterator[Up]:
    data = tmp_path / "data"
    port = free_port()
    env = {**os.environ, "PORTFOLIO_PORT": str(port)}
    command = [sys.executable, "-m", "tickwatch_devstack", "--repo", str(tmp_path)]
    command += ["--data", str(data), "up", "--services", "portfolio", "--ready-timeout", "60"]
    for flag in ("--kafka-port", "--postgres-port", "--redis-port", "--smtp-port"):
        command += [flag, str(free_port())]
    command += ["--mail-http-port", str(free_port())]
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        yield Up(proc, data, port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        down(tmp_path, data)


def down(repo: Path, data: Path) -> str:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tickwatch_devstack",
            "--repo",
            str(repo),
            "--data",
            str(data),
            "down",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def health(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
        return int(resp.status)


def test_up_starts_servers_and_services_and_down_leaves_no_process(tmp_path: Path) -> None:
    with running_up(tmp_path) as up:
        up.wait_for("Tickwatch is running")
        records = RunDir(up.data / "run").records()
        assert {r.name for r in records} >= {"up", "svc-portfolio"}
        assert all(r.alive() for r in records)
        assert health(up.portfolio_port) == 200

        said = down(tmp_path, up.data)

        assert "stopped" in said
        assert up.proc.wait(30) == 0
        assert not any(r.alive() for r in records)
        assert RunDir(up.data / "run").records() == []


def test_down_cleans_up_after_an_up_that_was_killed(tmp_path: Path) -> None:
    with running_up(tmp_path) as up:
        up.wait_for("Tickwatch is running")
        records = RunDir(up.data / "run").records()
        up.proc.send_signal(signal.SIGKILL)
        up.proc.wait(10)

        down(tmp_path, up.data)

        assert not any(r.alive() for r in records)
        assert RunDir(up.data / "run").records() == []


def test_ctrl_c_stops_everything_up_started(tmp_path: Path) -> None:
    with running_up(tmp_path) as up:
        up.wait_for("Tickwatch is running")
        records = RunDir(up.data / "run").records()

        up.proc.send_signal(signal.SIGINT)

        assert up.proc.wait(60) == 0
        assert not any(r.alive() for r in records)
        assert RunDir(up.data / "run").records() == []
