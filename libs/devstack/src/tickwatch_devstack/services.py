"""Run a Tickwatch service as a real process (``python -m tickwatch_<name>``) for tests and benches."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tickwatch_devstack.infra import _die_with_parent

SERVICES = ("ingestor", "gateway", "alert-engine", "notifier", "portfolio")
DEFAULT_PORTS = {
    "gateway": 8080,
    "ingestor": 8081,
    "alert-engine": 8082,
    "notifier": 8083,
    "portfolio": 8084,
}


def package(service: str) -> str:
    return "tickwatch_" + service.replace("-", "_")


def port_variable(service: str) -> str:
    return service.replace("-", "_").upper() + "_PORT"


def ready(port: int, path: str = "/ready") -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def service_process(
    service: str,
    env: dict[str, str],
    port: int,
    *,
    log_path: Path | None = None,
    args: tuple[str, ...] = (),
    wait: str | None = "/ready",
    timeout_s: float = 60,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start the service, wait until ``wait`` answers 200, stop it (SIGTERM) on exit."""
    full_env = {**env, port_variable(service): str(port)}
    out = log_path.open("ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", package(service), *args],
        env=full_env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    try:
        if wait:
            deadline = time.monotonic() + timeout_s
            while not ready(port, wait):
                if proc.poll() is not None:
                    raise RuntimeError(f"{service} exited with {proc.returncode} (log: {log_path})")
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{service} not ready on :{port} within {timeout_s}s (log: {log_path})"
                    )
                time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if log_path and out is not subprocess.DEVNULL:
            out.close()  # type: ignore[union-attr]
