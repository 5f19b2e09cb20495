"""What the whole local system costs while nobody uses it: CPU and memory per process.

    .venv/bin/python bench/bench_idle.py [--window 60] [--settle 10] [--states idle,replay]

Runs the system exactly as ``make run`` does (``python -m tickwatch_devstack up``: the embedded
Apache Kafka, PostgreSQL, Redis and mail catcher, topics, migrations, the five services and the
supervisor itself) in a temporary data folder on free ports, with ``MARKET_SOURCES=replay``. Once
every ``/ready`` answers 200 it waits ``--settle`` seconds, then reads ``/proc`` for every process
of the tree at the start and the end of ``--window`` seconds: CPU as a percentage of one core
(user + system time, plus that of children reaped in the window, e.g. short PostgreSQL
backends), RSS and PSS at the end (PSS shares each shared page out among the processes using it,
so its total does not count PostgreSQL's shared buffers once per backend). No client connects.

Two states, each a fresh system:

- ``idle``: no ticks. The ingestor runs (so its own idle cost counts) but its replay source is
  slowed a millionfold (``REPLAY_SPEED=0.000001``): it publishes the session's first trades at
  start, then nothing for days.
- ``replay``: the bundled replay session at its normal speed (``REPLAY_SPEED=1``, a few ticks a
  second per market, as ``make run`` without internet), still no clients.

The target (issue 9) is the ``idle`` total at most 5 % of one core. Other work on the machine
slows every process a little, so figures are a little high on a loaded machine, never low.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tickwatch_devstack.infra import free_port
from tickwatch_devstack.services import SERVICES, port_variable, ready

REPO = Path(__file__).resolve().parent.parent
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
TARGET_PCT = 5.0
STATES = {"idle": "0.000001", "replay": "1"}
# Servers the caller may name for its own tests; here every one must be the system's own.
INFRA_VARIABLES = ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "REDIS_URL", "SMTP_HOST", "SMTP_PORT")


# ---------------------------------------------------------------- /proc


@dataclass(frozen=True)
class Sample:
    pid: int
    ppid: int
    started: int  # clock ticks since boot: with the pid, names one process even if pids recycle
    cpu_ticks: int  # utime + stime + cutime + cstime
    rss_kb: int


def read_sample(pid: int) -> Sample | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    # fields[0] is field 3 of proc(5): state, ppid, ..., utime=14, stime, cutime, cstime, ...
    ppid = int(fields[1])
    cpu = sum(int(f) for f in fields[11:15])
    started = int(fields[19])
    rss_kb = int(fields[21]) * PAGE_KB
    return Sample(pid, ppid, started, cpu, rss_kb)


def pss_kb(pid: int) -> int:
    """Proportional set size (needs to be the process's owner, or root); 0 when unreadable."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def tree(root: int) -> dict[int, Sample]:
    """``root`` and every process descended from it, sampled now."""
    samples: dict[int, Sample] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            sample = read_sample(int(entry.name))
            if sample is not None:
                samples[sample.pid] = sample
    children: dict[int, list[int]] = {}
    for s in samples.values():
        children.setdefault(s.ppid, []).append(s.pid)
    found: dict[int, Sample] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in samples and pid not in found:
            found[pid] = samples[pid]
            todo += children.get(pid, [])
    return found


def label(pid: int) -> str:
    """What a process of the system is, from its command line."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    line = " ".join(words)
    if "kafka.Kafka" in line:
        return "kafka (JVM)"
    if words and words[0].startswith("postgres:"):
        title = words[0].removeprefix("postgres:").strip()
        parts = title.split()
        # "user database host(port) state": a client connection; the rest are server processes
        return (
            "postgres: connection" if len(parts) >= 3 and "(" in parts[2] else f"postgres: {title}"
        )
    if words and Path(words[0]).name == "postgres":
        return "postgres: postmaster"
    if "redis-server" in line:
        return "redis"
    if "tickwatch_devstack.mailcatcher" in line:
        return "smtp (mail catcher)"
    if "tickwatch_devstack" in line:
        return "make run (supervisor)"
    for service in SERVICES:
        if f"tickwatch_{service.replace('-', '_')}" in line:
            return str(service)
    return words[0] if words else "?"


@dataclass(frozen=True)
class Row:
    label: str
    count: int
    cpu_pct: float
    rss_mb: float
    pss_mb: float


def measure(root: int, window_s: float) -> list[Row]:
    before = tree(root)
    started = time.monotonic()
    time.sleep(window_s)
    after = tree(root)
    elapsed = time.monotonic() - started
    rows: dict[str, list[float]] = {}
    for pid, end in after.items():
        begin = before.get(pid)
        base = begin.cpu_ticks if begin is not None and begin.started == end.started else 0
        cpu_pct = (end.cpu_ticks - base) / TICKS_PER_S / elapsed * 100
        entry = rows.setdefault(label(pid), [0, 0.0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += cpu_pct
        entry[2] += end.rss_kb / 1024
        entry[3] += pss_kb(pid) / 1024
    return sorted(
        (Row(name, int(v[0]), v[1], v[2], v[3]) for name, v in rows.items()),
        key=lambda r: -r.cpu_pct,
    )


# ---------------------------------------------------------------- the system, as make run runs it


@contextlib.contextmanager
def system(data: Path, replay_speed: str, timeout_s: float = 240) -> Iterator[int]:
    """``make run`` in ``data`` on free ports; yields the pid of ``up`` once all five are ready."""
    ports = {s: free_port() for s in SERVICES}
    env = {k: v for k, v in os.environ.items() if k not in INFRA_VARIABLES}
    env.update({port_variable(s): str(p) for s, p in ports.items()})
    env.update({"MARKET_SOURCES": "replay", "REPLAY_SPEED": replay_speed})
    argv = [sys.executable, "-m", "tickwatch_devstack", "--repo", str(REPO), "--data", str(data)]
    argv += ["up"]
    for flag in ("--kafka-port", "--postgres-port", "--redis-port", "--smtp-port"):
        argv += [flag, str(free_port())]
    argv += ["--mail-http-port", str(free_port())]
    log = (data / "up.log").open("ab")
    proc = subprocess.Popen(
        argv, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
    )
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + timeout_s
        waiting = set(SERVICES)
        while waiting:
            if proc.poll() is not None:
                raise RuntimeError(f"make run exited with {proc.returncode} (log: {data}/up.log)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"not ready within {timeout_s:.0f} s: {sorted(waiting)}")
            waiting = {s for s in waiting if not ready(ports[s])}
            time.sleep(0.5)
        seen.update(tree(proc.pid))
        yield proc.pid
        seen.update(tree(proc.pid))
    finally:
        seen.update(tree(proc.pid))
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # `make down`'s way: up stops its own children
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for pid in seen - {proc.pid}:  # only what this system started, by pid
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        log.close()


def report(state: str, rows: list[Row], window_s: float) -> float:
    print(f"\nstate {state!r}: {window_s:.0f} s window, % of one core, memory in MB")
    print(f"  {'process':<34}{'n':>3}{'CPU %':>8}{'RSS':>8}{'PSS':>8}")
    for r in rows:
        print(f"  {r.label[:34]:<34}{r.count:>3}{r.cpu_pct:>8.2f}{r.rss_mb:>8.0f}{r.pss_mb:>8.0f}")
    cpu = sum(r.cpu_pct for r in rows)
    n = sum(r.count for r in rows)
    rss = sum(r.rss_mb for r in rows)
    pss = sum(r.pss_mb for r in rows)
    print(f"  {'total':<34}{n:>3}{cpu:>8.2f}{rss:>8.0f}{pss:>8.0f}")
    if state == "idle":
        verdict = "meets" if cpu <= TARGET_PCT else "MISSES"
        print(f"  target: at most {TARGET_PCT:.0f} % of one core while idle: {verdict} it")
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--window", type=float, default=60, help="seconds measured (default 60)")
    parser.add_argument("--settle", type=float, default=30, help="seconds after ready (default 30)")
    parser.add_argument("--states", default="idle,replay", help="idle, replay or both")
    args = parser.parse_args()
    for state in args.states.split(","):
        if state not in STATES:
            parser.error(f"unknown state {state!r}: {', '.join(STATES)}")
        data = Path(tempfile.mkdtemp(prefix=f"tickwatch-bench-idle-{state}-"))
        try:
            started = time.monotonic()
            with system(data, STATES[state]) as root:
                print(f"{state}: make run ready in {time.monotonic() - started:.1f} s", flush=True)
                time.sleep(args.settle)
                rows = measure(root, args.window)
            report(state, rows, args.window)
        finally:
            shutil.rmtree(data, ignore_errors=True)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
