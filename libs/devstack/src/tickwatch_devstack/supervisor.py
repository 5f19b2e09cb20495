"""``make run`` and ``make down``: the whole system on this machine, and stopping it again.

``up`` starts the servers the environment does not name (Apache Kafka, PostgreSQL, Redis, the mail
catcher) under ``.data/`` on fixed ports, creates the topics, applies every service's migrations,
starts the five services as separate processes with their output prefixed by the service name,
waits until each answers ``/ready``, prints the URLs and then supervises until Ctrl-C or SIGTERM,
when it stops everything it started. Supervising (:class:`Supervisor`, by the rules of
:mod:`tickwatch_devstack.supervision`): a service that exits is started again with backoff and a
line saying so, a service that turns unready (or recovers) gets a line, and the state of each
(restart count included) is kept in ``.data/run/status.json`` for ``status``.

Every child is the leader of its own process group and is recorded in ``.data/run/`` (one file per
process: its pid, and a word its command line must contain, so a recycled pid is never killed).
``down`` reads those files: it asks a running ``up`` to stop, then ends whatever is left, which
covers an ``up`` that crashed or was killed. The children also get SIGTERM from the kernel when
``up`` dies (``PR_SET_PDEATHSIG``), so even a ``kill -9`` of ``up`` rarely leaves anything behind.

Each service writes to ``.data/logs/<service>.log`` and a thread per service follows that file
onto our stdout, prefixed with the service name; honcho would do the prefixing, but not the
readiness waits, the pid records or the parent-death signal, which are most of this module, and
it would pipe the services' output through itself (a service then fails to log, and to shut down
cleanly, once the supervisor is gone).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from dotenv import dotenv_values

from tickwatch_devstack.infra import InfraError, Stack, _die_with_parent, port_in_use, start_stack
from tickwatch_devstack.services import (
    DEFAULT_PORTS,
    GATEWAY_OPS_PORT,
    SERVICES,
    package,
    port_variable,
)
from tickwatch_devstack.supervision import (
    Readiness,
    ReadinessWatch,
    RestartPolicy,
    RestartTracker,
    status_lines,
)

INFRA_VARIABLES = ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "REDIS_URL", "SMTP_HOST")
DEFAULT_MAIL_FROM = "Tickwatch <alerts@tickwatch.local>"
# The local system idles on a laptop: consumer heartbeats every 3 s (a session of 10 s) instead of
# the services' 1 s / 6 s cut its idle cost from 5.2 to 4.8 % of a core (bench/bench_idle.py).
# The price: a service killed without leaving is replaced in its group after 10 s, not 6 s.
LOCAL_DEFAULTS = {"KAFKA_HEARTBEAT_INTERVAL_MS": "3000", "KAFKA_SESSION_TIMEOUT_MS": "10000"}
COLOURS = ("36", "33", "35", "32", "34", "91", "96")


@dataclass(frozen=True)
class InfraPorts:
    kafka: int = 19092
    postgres: int = 15432
    redis: int = 16379
    smtp: int = 1025
    mail_http: int = 8025


class Refused(RuntimeError):
    """``up`` will not start; the message says why and what to do."""


# ---------------------------------------------------------------- pid records in .data/run


@dataclass(frozen=True)
class Record:
    name: str
    pid: int
    marker: str  # a word the process's command line contains, so a reused pid is left alone

    def alive(self) -> bool:
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return False
        if not cmdline:  # a zombie or a kernel thread
            return False
        return self.marker.encode() in cmdline


class RunDir:
    """``.data/run``: one ``<name>.pid`` file per process we started (``pid`` and ``marker``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def add(self, name: str, pid: int, marker: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(f"{pid}\n{marker}\n")
        tmp.rename(self.path / f"{name}.pid")

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / f"{name}.pid").unlink()

    def records(self) -> list[Record]:
        found = []
        for file in sorted(self.path.glob("*.pid")):
            try:
                pid, marker = file.read_text().split("\n")[:2]
                found.append(Record(file.stem, int(pid), marker))
            except ValueError:
                file.unlink()
        return found


# How often a log follower looks for new lines when there are none: the terminal is at most this
# late; five followers at 20 looks a second cost about half a percent of a core idle.
FOLLOW_POLL_S = 0.5


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _wait_gone(records: list[Record], timeout_s: float) -> list[Record]:
    deadline = time.monotonic() + timeout_s
    alive = [r for r in records if r.alive()]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [r for r in alive if r.alive()]
    return alive


def stop_recorded(run_dir: RunDir, out: TextIO = sys.stdout, timeout_s: float = 15) -> list[str]:
    """Stop every recorded process, ``up`` first (it stops its own children); return their names."""
    stopped: list[str] = []
    records = run_dir.records()
    up = [r for r in records if r.name == "up"]
    for record in up:
        if record.alive():
            print(f"stopping make run (pid {record.pid}) ...", file=out, flush=True)
            os.kill(record.pid, signal.SIGTERM)
            if _wait_gone([record], 60):
                print("  it did not stop within 60 s; ending its processes", file=out)
            stopped.append("make run and what it started")
        run_dir.remove("up")
    rest = [r for r in run_dir.records() if r.alive()]
    for record in rest:
        # PostgreSQL's fast shutdown is SIGINT; everything else stops on SIGTERM.
        _signal_group(record.pid, signal.SIGINT if record.marker == "postgres" else signal.SIGTERM)
        stopped.append(record.name)
    for record in _wait_gone(rest, timeout_s):
        print(f"  {record.name} (pid {record.pid}) ignored SIGTERM: killing it", file=out)
        _signal_group(record.pid, signal.SIGKILL)
    _wait_gone(rest, 5)
    for record in run_dir.records():
        run_dir.remove(record.name)
    return stopped


# ---------------------------------------------------------------- service processes


@dataclass
class ServiceProcess:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    follower: threading.Thread
    tail: list[str] = field(default_factory=list)

    def stop(self, timeout_s: float = 15) -> None:
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.follower.join(2)


class Console:
    """Writes lines from several threads without interleaving them; colours on a terminal."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.lock = threading.Lock()
        self.colour = out.isatty() and not os.environ.get("NO_COLOR")
        self.width = max(len(s) for s in SERVICES)

    def line(self, prefix: str, text: str, colour_index: int = 0) -> None:
        label = prefix.ljust(self.width)
        if self.colour:
            label = f"\x1b[{COLOURS[colour_index % len(COLOURS)]}m{label}\x1b[0m"
        self._write(f"{label} | {text}\n")

    def say(self, text: str = "") -> None:
        self._write(f"{text}\n")

    def _write(self, text: str) -> None:
        # A closed terminal or pipe must not stop the supervisor in the middle of its clean-up.
        with self.lock, contextlib.suppress(OSError, ValueError):
            self.out.write(text)
            self.out.flush()


def _follow(
    log_path: Path,
    offset: int,
    proc: subprocess.Popen[bytes],
    console: Console,
    name: str,
    index: int,
    tail: list[str],
) -> None:
    """Print the lines the service appends to its log file until it has exited and all is read."""
    with log_path.open("rb") as log:
        log.seek(offset)
        pending = b""
        while True:
            chunk = log.readline()
            if chunk:
                pending += chunk
                if not pending.endswith(b"\n"):
                    continue
                text = pending.decode(errors="replace").rstrip("\n")
                pending = b""
                tail.append(text)
                del tail[:-20]
                console.line(name, text, index)
            elif proc.poll() is not None:
                if pending:
                    console.line(name, pending.decode(errors="replace"), index)
                return
            else:
                time.sleep(FOLLOW_POLL_S)


def start_service(
    service: str,
    index: int,
    port: int,
    env: dict[str, str],
    logs: Path,
    console: Console,
    cwd: Path,
) -> ServiceProcess:
    """Start ``python -m tickwatch_<service>`` writing to its log file, and follow that file.

    The service writes to a file rather than a pipe to us, so it never depends on us being alive
    to read: if ``up`` is killed, the services still log their shutdown (a write to a broken pipe
    would fail in the middle of it).
    """
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{service}.log"
    with log_path.open("ab") as out:
        offset = out.tell()
        proc = subprocess.Popen(
            [sys.executable, "-m", package(service)],
            env={**env, port_variable(service): str(port), "PYTHONUNBUFFERED": "1"},
            cwd=cwd,  # where the services read .env from
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    tail: list[str] = []
    follower = threading.Thread(
        target=_follow,
        args=(log_path, offset, proc, console, service, index, tail),
        name=f"log-{service}",
        daemon=True,
    )
    follower.start()
    return ServiceProcess(service, port, proc, log_path, follower, tail)


def probe_ready(port: int, timeout_s: float = 2) -> tuple[bool, str]:
    """Ask ``/ready``; the answer is (ready, why not)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=timeout_s) as resp:
            return resp.status == 200, ""
    except urllib.error.HTTPError as exc:
        return False, f"/ready answered {exc.code}: {_failing_checks(exc.read())}"
    except OSError as exc:
        return False, f"no answer on 127.0.0.1:{port}/ready ({getattr(exc, 'reason', exc)})"


def _failing_checks(body: bytes) -> str:
    try:
        data: Any = json.loads(body)
        checks = data.get("checks", {})
        failing = [f"{n}: {c.get('detail') or 'down'}" for n, c in checks.items() if not c["ok"]]
        return "; ".join(failing) or body.decode(errors="replace")[:300]
    except (ValueError, AttributeError, KeyError, TypeError):
        return body.decode(errors="replace")[:300]


def wait_ready(
    services: list[ServiceProcess], timeout_s: float, console: Console
) -> dict[str, str]:
    """Wait until every service answers ``/ready``; return ``{name: why not}`` for the rest."""
    deadline = time.monotonic() + timeout_s
    waiting = {s.name: s for s in services}
    why: dict[str, str] = {}
    while waiting and time.monotonic() < deadline:
        for name, service in list(waiting.items()):
            code = service.proc.poll()
            if code is not None:
                last = next((t for t in reversed(service.tail) if t.strip()), "")
                why[name] = f"exited with code {code}" + (f": {last}" if last else "")
                del waiting[name]
                continue
            ok, reason = probe_ready(service.port)
            if ok:
                console.say(f"devstack: {name} is ready on :{service.port}")
                why.pop(name, None)
                del waiting[name]
            else:
                why[name] = reason
        if waiting:
            time.sleep(0.25)
    for name in waiting:
        why[name] = f"not ready after {timeout_s:.0f} s: {why.get(name, '')}"
    return why


# ---------------------------------------------------------------- up


def load_environment(repo: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(what the children inherit, what the settings will see: ``.env`` under the environment)."""
    env_file = repo / ".env"
    from_file = (
        {k: v for k, v in dotenv_values(env_file).items() if v is not None}
        if env_file.exists()
        else {}
    )
    return dict(os.environ), {**from_file, **os.environ}


def _check_free(ports: dict[str, int]) -> None:
    taken = [f"{what} port {port}" for what, port in ports.items() if port_in_use(port)]
    if taken:
        raise Refused(
            "cannot start: "
            + ", ".join(taken)
            + " already in use on 127.0.0.1. Another `make run`? Try `make down`; or stop"
            " whatever holds the port; or point Tickwatch at existing servers with"
            " KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL / REDIS_URL / SMTP_HOST (see README)."
        )


def _kept_secret(data: Path, name: str) -> str:
    """A random secret kept under ``.data/`` (JWT_SECRET, INTERNAL_API_SECRET) across runs, so
    logins survive a restart; made readable by its owner only from its first byte."""
    path = data / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so one path (KeyboardInterrupt) stops everything."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous_term = signal.signal(signal.SIGTERM, interrupt)
    previous_hup = signal.signal(signal.SIGHUP, interrupt)  # the terminal went away
    # Even when started with SIGINT ignored (a background job of a script), Ctrl-C / SIGINT stops.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGHUP, previous_hup)
        signal.signal(signal.SIGINT, previous_int)


def up(
    repo: Path,
    *,
    data: Path | None = None,
    ports: InfraPorts | None = None,
    services: tuple[str, ...] = SERVICES,
    ready_timeout_s: float = 120,
    watch: WatchSettings | None = None,
    out: TextIO = sys.stdout,
) -> int:
    data = (data or repo / ".data").resolve()
    ports = ports or InfraPorts()
    watch = watch or WatchSettings()
    console = Console(out)
    run_dir = RunDir(data / "run")
    inherited, seen = load_environment(repo)

    records = run_dir.records()
    for record in records:
        if record.name == "up" and record.alive():
            raise Refused(f"`make run` is already running (pid {record.pid}); `make down` stops it")
    if any(r.alive() for r in records):
        console.say("devstack: stopping what a previous `make run` left running ...")
        stop_recorded(run_dir, out)
    for record in run_dir.records():
        run_dir.remove(record.name)
    with contextlib.suppress(FileNotFoundError):
        (run_dir.path / "status.json").unlink()  # a killed ``up``'s, stale

    wanted: dict[str, int] = {}
    if not seen.get("KAFKA_BOOTSTRAP_SERVERS"):
        wanted["Kafka"] = ports.kafka
    if not seen.get("DATABASE_URL"):
        wanted["PostgreSQL"] = ports.postgres
    if not seen.get("REDIS_URL"):
        wanted["Redis"] = ports.redis
    if not seen.get("SMTP_HOST"):
        wanted["SMTP"] = ports.smtp
        wanted["mail page"] = ports.mail_http
    service_ports = {s: int(seen.get(port_variable(s)) or DEFAULT_PORTS[s]) for s in services}
    gateway_ops_port = int(seen.get("GATEWAY_OPS_PORT") or GATEWAY_OPS_PORT)
    ops_ports = {"gateway ops": gateway_ops_port} if "gateway" in services else {}
    _check_free({**wanted, **service_ports, **ops_ports})

    run_dir.add("up", os.getpid(), "tickwatch_devstack")
    running: list[ServiceProcess] = []
    stack: Stack | None = None
    try:
        with _signals_raise():
            started = time.monotonic()
            infra_env = {k: v for k, v in seen.items() if k in (*INFRA_VARIABLES, "SMTP_PORT")}
            stack = start_stack(
                data / "stack",
                kafka_port=ports.kafka,
                postgres_port=ports.postgres,
                redis_port=ports.redis,
                smtp_port=ports.smtp,
                mail_http_port=ports.mail_http,
                environ=infra_env,
            )
            for server in stack.servers:
                run_dir.add(f"infra-{server.name}", server.proc.pid, _marker(server.name))
                console.say(
                    f"devstack: {server.name} started on 127.0.0.1:{server.port} "
                    f"in {server.started_s:.2f} s (log: {_rel(server.log_path, repo)})"
                )
            external = [v for v in INFRA_VARIABLES if seen.get(v)]
            if external:
                console.say(f"devstack: using the servers named by {', '.join(external)}")
            _provision(stack, services, console)
            console.say(f"devstack: infrastructure ready in {time.monotonic() - started:.2f} s")

            env = {**inherited, **stack.env()}
            if not seen.get("JWT_SECRET"):
                env["JWT_SECRET"] = _kept_secret(data, "jwt_secret")
            if not seen.get("INTERNAL_API_SECRET"):
                env["INTERNAL_API_SECRET"] = _kept_secret(data, "internal_api_secret")
            if not seen.get("MAIL_FROM"):
                env["MAIL_FROM"] = DEFAULT_MAIL_FROM
            if "portfolio" in service_ports and not seen.get("PORTFOLIO_URL"):
                env["PORTFOLIO_URL"] = f"http://127.0.0.1:{service_ports['portfolio']}"
            for name, value in LOCAL_DEFAULTS.items():
                if not seen.get(name):
                    env[name] = value
            allowance = loopback_webhook_allowance(seen)
            env.update(allowance)
            if allowance.get("ALERTS_ALLOW_PRIVATE_WEBHOOKS"):
                console.say(
                    "devstack: the API listens on loopback only, so alerts' webhooks may call"
                    " loopback and private addresses (the local webhook catcher)"
                )
            for index, service in enumerate(services):
                proc = start_service(
                    service, index, service_ports[service], env, data / "logs", console, repo
                )
                running.append(proc)
                run_dir.add(f"svc-{service}", proc.proc.pid, package(service))
            not_ready = wait_ready(running, ready_timeout_s, console)
            _print_summary(console, stack, running, not_ready, repo, data, gateway_ops_port)

            def spawn(index: int) -> ServiceProcess:
                name = services[index]
                return start_service(
                    name, index, service_ports[name], env, data / "logs", console, repo
                )

            ready_at_start = {s.name for s in running if s.name not in not_ready}
            Supervisor(running, spawn, console, run_dir, watch, ready_at_start).run()
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        old_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            console.say("devstack: stopping ...")
            for child in reversed(running):
                child.stop()
                run_dir.remove(f"svc-{child.name}")
            if stack is not None:
                for server in stack.servers:
                    run_dir.remove(f"infra-{server.name}")
                stack.stop()
            run_dir.remove("up")
            console.say("devstack: stopped")
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            signal.signal(signal.SIGHUP, old_hup)
    return 0


def loopback_webhook_allowance(seen: dict[str, str]) -> dict[str, str]:
    """What ``up`` adds so webhooks may reach this machine (the mail page's webhook catcher).

    The SSRF guard (``tickwatch_common.ssrf``) refuses loopback and private webhook targets
    unless the gateway and the notifier are told otherwise. Allowing them is safe only while
    nobody else can create an alert: so ``up`` makes the API listen on 127.0.0.1 unless
    ``GATEWAY_HOST`` says otherwise, and allows private webhooks only while it is loopback and
    neither allowance is set. Someone who exposes the API (``GATEWAY_HOST=0.0.0.0``) keeps the
    guard, unless they set the allowances themselves. Pure.
    """
    extra: dict[str, str] = {}
    host = seen.get("GATEWAY_HOST") or "127.0.0.1"
    if not seen.get("GATEWAY_HOST"):
        extra["GATEWAY_HOST"] = host
    names = ("ALERTS_ALLOW_PRIVATE_WEBHOOKS", "NOTIFIER_ALLOW_PRIVATE_WEBHOOKS")
    if host in ("127.0.0.1", "::1", "localhost") and not any(seen.get(n) for n in names):
        extra.update({name: "true" for name in names})
    return extra


def _marker(server: str) -> str:
    return {
        "kafka": "kafka.Kafka",
        "postgres": "postgres",
        "redis": "redis",
        "smtp": "mailcatcher",
    }[server]


def _rel(path: Path, repo: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(repo.resolve()))
    return str(path)


def _provision(stack: Stack, services: tuple[str, ...], console: Console) -> None:
    import asyncio

    from tickwatch_devstack.provision import create_topics, migrate_all

    try:
        created = asyncio.run(create_topics(stack.kafka_bootstrap_servers))
    except Exception as exc:
        raise Refused(
            f"cannot create the topics on Kafka at {stack.kafka_bootstrap_servers}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    console.say(f"devstack: topics ready ({len(created)} created)")
    for outcome in asyncio.run(migrate_all(stack.database_url, services)):
        if outcome.error:
            console.say(f"devstack: migrations of {outcome.service} FAILED: {outcome.error}")
        elif outcome.applied:
            console.say(
                f"devstack: migrations of {outcome.service} applied: {', '.join(outcome.applied)}"
            )


def _print_summary(
    console: Console,
    stack: Stack,
    running: list[ServiceProcess],
    not_ready: dict[str, str],
    repo: Path,
    data: Path,
    gateway_ops_port: int,
) -> None:
    ports = {s.name: s.port for s in running}
    lines = ["", "Tickwatch is running. Ctrl-C here, or `make down`, stops everything.", ""]
    if "gateway" in ports:
        gw = f"http://127.0.0.1:{ports['gateway']}"
        lines += [
            f"  API         {gw}/api/v1   (e.g. {gw}/api/v1/prices/BTC-USDT)",
            f"  API docs    {gw}/docs",
            f"  dashboard   {gw}/",
            f"  metrics     http://127.0.0.1:{gateway_ops_port}/metrics   (the gateway's ops port;"
            " each other service's on its own port)",
        ]
    if stack.mail_http_url:
        lines.append(
            f"  mail        {stack.mail_http_url}   (mail caught by the local SMTP server)"
        )
        lines.append(
            f"  webhooks    {stack.mail_http_url}webhooks/<name>   (POSTs caught, listed at"
            f" {stack.mail_http_url}webhooks)"
        )
    lines.append("")
    for service in running:
        state = "ready" if service.name not in not_ready else "NOT READY"
        lines.append(
            f"  {service.name:<13}http://127.0.0.1:{service.port}/health   {state}"
            f"   (log: {_rel(service.log_path, repo)})"
        )
    lines += [
        "",
        f"  Kafka       {stack.kafka_bootstrap_servers}",
        f"  PostgreSQL  {stack.database_url}",
        f"  Redis       {stack.redis_url}",
        f"  SMTP        {stack.smtp_host}:{stack.smtp_port}",
        f"  data        {_rel(data, repo)}/",
    ]
    if not_ready:
        lines += ["", "Not ready:"]
        lines += [f"  {name}: {why}" for name, why in not_ready.items()]
    lines.append("")
    for line in lines:
        console.say(line)


@dataclass(frozen=True)
class WatchSettings:
    """How ``up`` supervises once everything has started (``up --help`` names the flags)."""

    restart: RestartPolicy = field(default_factory=RestartPolicy)
    ready_poll_s: float = 5.0
    # One poll's bound: above the services' own 2 s per check, so a slow check is named by
    # the service's answer rather than by our timeout.
    ready_probe_timeout_s: float = 5.0


@dataclass
class _Slot:
    """What the supervisor knows of one service between polls."""

    index: int
    tracker: RestartTracker
    watch: ReadinessWatch
    next_start_at: float | None = None  # monotonic; set while waiting to start it again
    next_poll_at: float = 0.0
    probe: Future[tuple[bool, str]] | None = None
    probe_pid: int = 0
    last_exit: int | None = None
    last_line: str = ""
    why: str = ""


def _exit_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"code {code} ({signal.Signals(-code).name})"
    return f"code {code}"


class Supervisor:
    """Keeps the services running and says what happens to them after start.

    A service that exits is started again after a backoff (:class:`RestartTracker`), with a line
    naming it, its exit code, its last log line, the restart count and when it will try again.
    Each running service's ``/ready`` is polled (in a thread each, so a hung answer delays
    nothing else); a turn to unready and a recovery get one line each. The state of every
    service is kept in ``.data/run/status.json`` for ``python -m tickwatch_devstack status``.
    Services are only ever started from the calling (main) thread: ``PR_SET_PDEATHSIG`` fires
    when the thread that forked a child ends, not the process.
    """

    def __init__(
        self,
        running: list[ServiceProcess],
        spawn: Callable[[int], ServiceProcess],
        console: Console,
        run_dir: RunDir,
        settings: WatchSettings,
        ready_at_start: set[str],
    ) -> None:
        self.running = running
        self.spawn = spawn
        self.console = console
        self.run_dir = run_dir
        self.settings = settings
        self.started_wall = time.time()
        now = time.monotonic()
        self.slots: list[_Slot] = []
        for index, service in enumerate(running):
            slot = _Slot(index, RestartTracker(settings.restart, now), ReadinessWatch())
            if service.name in ready_at_start:
                slot.watch.observe(True)
            slot.next_poll_at = now + settings.ready_poll_s
            self.slots.append(slot)
        self.pool = ThreadPoolExecutor(max(1, len(running)), thread_name_prefix="ready-probe")
        self._written = ""

    def run(self) -> None:
        """Supervise until interrupted (KeyboardInterrupt from the signal handlers)."""
        try:
            while True:
                self.step(time.monotonic())
                time.sleep(0.25)  # the latency of noticing an exit; idle cost well under 1 %
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)
            with contextlib.suppress(FileNotFoundError):
                self.status_path.unlink()

    @property
    def status_path(self) -> Path:
        return self.run_dir.path / "status.json"

    def step(self, now: float) -> None:
        for slot in self.slots:
            service = self.running[slot.index]
            if slot.next_start_at is not None:
                if now >= slot.next_start_at:
                    self._restart(slot, now)
                continue
            code = service.proc.poll()
            if code is not None:
                self._exited(slot, service, code, now)
                continue
            if slot.tracker.running(now):
                self.console.say(
                    f"devstack: {service.name} has stayed up "
                    f"{self.settings.restart.stable_s:.0f} s: no longer failing"
                )
            self._poll_ready(slot, service, now)
        self._write_status(now)

    def _exited(self, slot: _Slot, service: ServiceProcess, code: int, now: float) -> None:
        service.follower.join(1)  # it ends once it has read what the service wrote last
        slot.last_exit = code
        slot.last_line = next((t for t in reversed(service.tail) if t.strip()), "")
        slot.probe = None
        delay = slot.tracker.exited(now)
        slot.next_start_at = now + delay
        policy = self.settings.restart
        last = f"; last line: {slot.last_line[:300]}" if slot.last_line else ""
        self.console.say(
            f"devstack: {service.name} exited with {_exit_text(code)}{last} "
            f"(log: {service.log_path})"
        )
        failing = ""
        if slot.tracker.failing:
            failing = (
                f"; WARNING: {service.name} is FAILING ({slot.tracker.short_runs} exits in a row"
                f" within {policy.stable_s:.0f} s of a start; retried at most every"
                f" {policy.cap_s:.0f} s until it stays up)"
            )
        self.console.say(
            f"devstack: restart {slot.tracker.restarts + 1} of {service.name} in {delay:g} s"
            f"{failing}"
        )

    def _restart(self, slot: _Slot, now: float) -> None:
        old = self.running[slot.index]
        new = self.spawn(slot.index)
        self.running[slot.index] = new
        self.run_dir.add(f"svc-{new.name}", new.proc.pid, package(new.name))
        slot.tracker.restarted(now)
        slot.watch = ReadinessWatch()
        slot.next_start_at = None
        slot.next_poll_at = now  # poll at once: "ready again" should not wait a poll interval
        slot.why = ""
        self.console.say(
            f"devstack: restarted {old.name} (restart {slot.tracker.restarts}, pid {new.proc.pid})"
        )

    def _poll_ready(self, slot: _Slot, service: ServiceProcess, now: float) -> None:
        if slot.probe is not None:
            if not slot.probe.done():
                return
            probe, slot.probe = slot.probe, None
            if slot.probe_pid == service.proc.pid:
                ok, why = probe.result()
                self._observed(slot, service, ok, why)
        if now >= slot.next_poll_at:
            # Until it has been ready once, poll often: the "ready again" line is what a
            # restart is waited on by.
            starting = slot.watch.ready is None
            interval = min(0.5, self.settings.ready_poll_s) if starting else None
            slot.next_poll_at = now + (interval or self.settings.ready_poll_s)
            slot.probe_pid = service.proc.pid
            slot.probe = self.pool.submit(
                probe_ready, service.port, self.settings.ready_probe_timeout_s
            )

    def _observed(self, slot: _Slot, service: ServiceProcess, ok: bool, why: str) -> None:
        slot.why = why
        change = slot.watch.observe(ok)
        name, port = service.name, service.port
        if change is Readiness.UNREADY:
            self.console.say(f"devstack: WARNING: {name} turned unready: {why}")
        elif change is Readiness.RECOVERED:
            self.console.say(f"devstack: {name} recovered: ready again on :{port}")
        elif change is Readiness.READY and slot.tracker.restarts:
            self.console.say(
                f"devstack: {name} is ready again on :{port} after restart {slot.tracker.restarts}"
            )
        elif change is Readiness.READY:
            self.console.say(f"devstack: {name} is ready on :{port}")

    def status(self, now: float) -> dict[str, Any]:
        services: dict[str, Any] = {}
        for slot in self.slots:
            service = self.running[slot.index]
            if slot.next_start_at is not None:
                state = "restarting"
            elif slot.watch.ready is None:
                state = "starting"
            else:
                state = "ready" if slot.watch.ready else "unready"
            services[service.name] = {
                "state": state,
                "failing": slot.tracker.failing,
                "restarts": slot.tracker.restarts,
                "pid": None if slot.next_start_at is not None else service.proc.pid,
                "port": service.port,
                "last_exit": slot.last_exit,
                "last_line": slot.last_line,
                "why": "" if state == "ready" else slot.why,
                "next_start_at": (
                    None
                    if slot.next_start_at is None
                    else round(time.time() + slot.next_start_at - now, 1)
                ),
            }
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started_wall))
        return {"pid": os.getpid(), "started": started, "services": services}

    def _write_status(self, now: float) -> None:
        text = json.dumps(self.status(now), indent=1)
        if text != self._written:  # a write only on a change
            tmp = self.status_path.with_name(".status.json.tmp")
            tmp.write_text(text)
            tmp.rename(self.status_path)
            self._written = text


def status(repo: Path, *, data: Path | None = None, out: TextIO = sys.stdout) -> int:
    """``python -m tickwatch_devstack status``: 0 when every service is ready, 3 when one is
    not, 1 when ``make run`` is not running."""
    run = RunDir((data or repo / ".data").resolve() / "run")
    if not any(r.name == "up" and r.alive() for r in run.records()):
        print("devstack: make run is not running", file=out)
        return 1
    try:
        current = json.loads((run.path / "status.json").read_text())
    except (OSError, ValueError):
        print("devstack: make run is starting (no status yet)", file=out)
        return 3
    for line in status_lines(current, time.time()):
        print(line, file=out)
    states = [s.get("state") for s in current.get("services", {}).values()]
    return 0 if all(state == "ready" for state in states) else 3


def down(repo: Path, *, data: Path | None = None, out: TextIO = sys.stdout) -> int:
    data = (data or repo / ".data").resolve()
    stopped = stop_recorded(RunDir(data / "run"), out)
    with contextlib.suppress(FileNotFoundError):
        (data / "run" / "status.json").unlink()  # left by an ``up`` that was killed
    stopped += _stop_orphan_postgres(data / "stack" / "pg" / "postgres", out)
    print(
        f"devstack: stopped {', '.join(stopped)}" if stopped else "devstack: nothing was running",
        file=out,
    )
    return 0


def _stop_orphan_postgres(pgdata: Path, out: TextIO) -> list[str]:
    """A PostgreSQL that a killed ``up`` started before recording it still has postmaster.pid."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n")[0])
    except (OSError, ValueError):
        return []
    record = Record("postgres", pid, "postgres")
    if not record.alive():
        return []
    print(f"  stopping an unrecorded PostgreSQL (pid {pid})", file=out)
    _signal_group(pid, signal.SIGINT)
    if _wait_gone([record], 15):
        _signal_group(pid, signal.SIGKILL)
    return ["postgres"]


def refuse(exc: Refused | InfraError) -> int:
    print(f"devstack: {exc}", file=sys.stderr)
    return 1
