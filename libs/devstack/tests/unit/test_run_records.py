"""The pid records of ``make run`` and the reasons it gives for a service that is not ready."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tickwatch_devstack.provision import migrations_dir, schema_name
from tickwatch_devstack.supervisor import Record, RunDir, _failing_checks, stop_recorded


def eventually(predicate: Callable[[], bool], timeout_s: float = 10) -> bool:
    """True as soon as ``predicate()`` is (a new process shows its command line a moment late)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_record_is_alive_only_while_its_process_runs_the_recorded_command(
    tmp_path: Path,
) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    try:
        assert eventually(Record("sleeper", proc.pid, "signal.pause").alive)
        # A recycled pid running something else is not ours to kill.
        assert not Record("sleeper", proc.pid, "tickwatch_gateway").alive()
    finally:
        proc.kill()
        proc.wait()
    assert not Record("sleeper", proc.pid, "signal.pause").alive()


def test_stop_recorded_ends_every_recorded_process_group_and_forgets_them(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path / "run")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", f"import signal; signal.pause()  # child {i}"],
            start_new_session=True,
        )
        for i in range(2)
    ]
    for i, proc in enumerate(procs):
        run_dir.add(f"svc-{i}", proc.pid, f"child {i}")
        assert eventually(Record(f"svc-{i}", proc.pid, f"child {i}").alive)
    run_dir.add("gone", 2**22 + 1, "nothing")  # a stale record of a process long gone

    stopped = stop_recorded(run_dir, out=io.StringIO(), timeout_s=10)

    assert sorted(stopped) == ["svc-0", "svc-1"]
    assert [proc.wait(10) for proc in procs] == [-15, -15]
    assert run_dir.records() == []


def test_not_ready_reason_names_the_failing_checks() -> None:
    body = {
        "status": "not_ready",
        "checks": {
            "postgres": {"ok": True, "detail": "", "critical": True},
            "kafka": {"ok": False, "detail": "KafkaConnectionError: refused", "critical": True},
        },
    }
    assert _failing_checks(json.dumps(body).encode()) == "kafka: KafkaConnectionError: refused"
    assert _failing_checks(b"Bad Gateway") == "Bad Gateway"


def test_each_service_migrates_its_own_schema() -> None:
    assert schema_name("alert-engine") == "alert_engine"
    directory = migrations_dir("portfolio")
    assert directory is not None
    assert (directory / "001_accounts_trades.sql").exists()
