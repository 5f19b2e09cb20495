"""``python -m tickwatch_devstack up`` / ``down`` as processes: they start and stop everything."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tickwatch_devstack.infra import free_port
from tickwatch_devstack.services import UpProcess
from tickwatch_devstack.supervisor import Record, RunDir

pytestmark = pytest.mark.integration


class Up:
    """``up`` of the portfolio alone; ``wait_for`` reads its output in order, as a person would."""

    def __init__(self, run: UpProcess, portfolio_port: int) -> None:
        self.run, self.proc, self.data = run, run.proc, run.data
        self.portfolio_port = portfolio_port
        self.cursor = 0

    def wait_for(self, text: str, timeout_s: float = 120) -> None:
        self.cursor = self.run.wait_for(text, timeout_s, after=self.cursor) + 1


@contextmanager
def running_up(
    tmp_path: Path, *args: str, own_postgres: bool = False, env: dict[str, str] | None = None
) -> Iterator[Up]:
    # Not under tmp_path: pytest makes /tmp/pytest-of-<user> 0700 again whenever a session
    # starts, and the postgres user must reach the data folder (an initdb broke half-way).
    scratch = Path(tempfile.mkdtemp(prefix="tickwatch-up-"))
    data = scratch / "data"
    port = free_port()
    env = {**os.environ, **(env or {}), "PORTFOLIO_PORT": str(port)}
    if own_postgres:  # a test that freezes PostgreSQL must not freeze a shared one
        env.pop("DATABASE_URL", None)
    servers = ("kafka", "postgres", "redis", "smtp", "mail-http")
    run = UpProcess(
        tmp_path,
        data,
        ports={server: free_port() for server in servers},
        services=("portfolio",),
        env=env,
        args=("--ready-timeout", "60", *args),
    )
    try:
        yield Up(run, port)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait(10)
        down(tmp_path, data)
        shutil.rmtree(scratch, ignore_errors=True)


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


def status(repo: Path, data: Path) -> tuple[int, str]:
    command = [sys.executable, "-m", "tickwatch_devstack", "--repo", str(repo)]
    result = subprocess.run(
        [*command, "--data", str(data), "status"], capture_output=True, text=True, timeout=60
    )
    return result.returncode, result.stdout


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def record(data: Path, name: str) -> Record:
    [found] = [r for r in RunDir(data / "run").records() if r.name == name]
    return found


def test_a_service_killed_with_sigkill_is_restarted_ready_again_and_down_leaves_no_process(
    tmp_path: Path,
) -> None:
    """One ``up`` for both (each costs a JVM start): what it starts, a kill -9 healed, and
    ``down`` stopping everything."""
    with running_up(tmp_path, "--restart-initial", "0.5", "--ready-poll", "0.5") as up:
        up.wait_for("Tickwatch is running")
        records = RunDir(up.data / "run").records()
        assert {r.name for r in records} >= {"up", "svc-portfolio"}
        assert all(r.alive() for r in records)
        assert health(up.portfolio_port) == 200
        first = record(up.data, "svc-portfolio")
        assert status(tmp_path, up.data)[0] == 0

        os.killpg(first.pid, signal.SIGKILL)

        up.wait_for("portfolio exited with code -9 (SIGKILL)", 30)
        up.wait_for("restart 1 of portfolio in 0.5 s", 5)
        up.wait_for("restarted portfolio (restart 1", 30)
        up.wait_for("portfolio is ready again", 60)
        second = record(up.data, "svc-portfolio")
        assert second.pid != first.pid and second.alive() and not first.alive()
        assert health(up.portfolio_port) == 200
        code, said = status(tmp_path, up.data)
        assert code == 0, said
        [line] = [line for line in said.splitlines() if "portfolio" in line]
        assert "ready" in line and "restarts 1" in line and "code -9" in line, said
        status_file = json.loads((up.data / "run" / "status.json").read_text())
        assert status_file["services"]["portfolio"]["restarts"] == 1

        said = down(tmp_path, up.data)
        assert "stopped" in said
        assert up.proc.wait(30) == 0
        assert not second.alive()
        assert not any(r.alive() for r in records)
        assert RunDir(up.data / "run").records() == []
        assert not (up.data / "run" / "status.json").exists()


def test_a_service_that_turns_unready_is_warned_about_once_and_so_is_its_recovery(
    tmp_path: Path,
) -> None:
    with running_up(tmp_path, "--ready-poll", "0.5", own_postgres=True) as up:
        up.wait_for("Tickwatch is running")
        postgres = record(up.data, "infra-postgres")
        # The server and each backend (every one in a session of its own) stop answering.
        frozen = [postgres.pid, *children(postgres.pid)]
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        try:
            # The first poll may time out before the service's own check names postgres.
            up.wait_for("WARNING: portfolio turned unready: ", 30)
            code, said = status(tmp_path, up.data)
            assert code == 3 and "unready" in said, said
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
        up.wait_for("portfolio recovered: ready again", 30)
        warnings = [line for line in up.run.lines if "turned unready" in line]
        assert len(warnings) == 1, warnings  # one line for the change, not one per poll
        assert status(tmp_path, up.data)[0] == 0


def test_a_service_that_dies_at_every_start_is_named_failing_and_still_retried(
    tmp_path: Path,
) -> None:
    broken = {"PORTFOLIO_STARTING_CASH": "a lot"}  # refused at boot: exit code 2
    flags = ("--restart-initial", "0.1", "--restart-cap", "0.2", "--ready-timeout", "10")
    with running_up(tmp_path, *flags, env=broken) as up:
        up.wait_for("Tickwatch is running")
        up.wait_for("portfolio exited with code 2", 30)
        up.wait_for("WARNING: portfolio is FAILING", 60)
        up.wait_for("restart 4 of portfolio in 0.2 s", 60)  # at the cap, not given up
        code, said = status(tmp_path, up.data)
        assert code == 3 and "FAILING" in said, said
