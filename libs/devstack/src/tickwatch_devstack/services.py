"""Run a Tickwatch service as a real process (``python -m tickwatch_<name>``) for tests and benches,
or the whole system under the real supervisor (:class:`UpProcess`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tickwatch_devstack.infra import _die_with_parent, free_port

SERVICES = ("ingestor", "gateway", "alert-engine", "notifier", "portfolio")
DEFAULT_PORTS = {
    "gateway": 8080,
    "ingestor": 8081,
    "alert-engine": 8082,
    "notifier": 8083,
    "portfolio": 8084,
}
GATEWAY_OPS_PORT = 8085
"""The gateway's ops listener (``/metrics``) unless GATEWAY_OPS_PORT says otherwise; the other
services serve their ops routes on their one port."""


def package(service: str) -> str:
    return "tickwatch_" + service.replace("-", "_")


def port_variable(service: str) -> str:
    return service.replace("-", "_").upper() + "_PORT"


def with_gateway_ops_port(services: tuple[str, ...], env: dict[str, str]) -> dict[str, str]:
    """``env`` with a free GATEWAY_OPS_PORT when a gateway is among ``services`` and ``env``
    names none: the default (8085) would clash between concurrent tests' gateways, or with a
    ``make run``. A caller that scrapes the gateway's ``/metrics`` names the port itself."""
    if "gateway" not in services or env.get("GATEWAY_OPS_PORT"):
        return env
    return {**env, "GATEWAY_OPS_PORT": str(free_port())}


def ready(port: int, path: str = "/ready") -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def ready_status(port: int, timeout_s: float = 3) -> int:
    """The status ``/ready`` answers (503 included), or 0 when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=timeout_s) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


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
    full_env = {**with_gateway_ops_port((service,), env), port_variable(service): str(port)}
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


class UpProcess:
    """``python -m tickwatch_devstack up`` run as ``make run`` runs it, for tests of the whole
    system: the servers on the given ports (the gateway's ops port a free one unless ``env``
    names it), a private data folder, the output kept line by line.

    Started from the calling thread (``PR_SET_PDEATHSIG`` follows the thread that forks); only
    :meth:`wait_for` blocks, so an async test calls it through ``asyncio.to_thread``.
    """

    def __init__(
        self,
        repo: Path,
        data: Path,
        *,
        ports: dict[str, int],
        services: tuple[str, ...],
        env: dict[str, str],
        args: tuple[str, ...] = (),
    ) -> None:
        command = [sys.executable, "-m", "tickwatch_devstack", "--repo", str(repo)]
        command += ["--data", str(data), "up", "--services", ",".join(services), *args]
        for server, port in ports.items():  # kafka, postgres, redis, smtp, mail-http
            command += [f"--{server}-port", str(port)]
        self.data = data
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            command,
            env=with_gateway_ops_port(services, env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=_die_with_parent,
        )
        threading.Thread(target=self._read, name="up-output", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, text: str, timeout_s: float = 180, after: int = 0) -> int:
        """Wait until a line from index ``after`` on contains ``text``; answer its index."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                for index in range(after, len(self.lines)):
                    if text in self.lines[index]:
                        return index
                after = max(after, len(self.lines))
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and after == len(self.lines)):
                    how = "exited" if self.proc.poll() is not None else f"not in {timeout_s} s"
                    raise AssertionError(
                        f"`up` printed no {text!r} ({how}):\n" + "\n".join(self.lines[-200:])
                    )
                self._changed.wait(min(left, 0.5))

    def stop(self, timeout_s: float = 120) -> int:
        """SIGTERM, as ``make down`` asks a running ``make run`` to stop; answer its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise
