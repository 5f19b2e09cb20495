"""How long the embedded servers take to start and stop here (``make bench`` runs this).

Starts the whole stack (Apache Kafka, PostgreSQL, Redis, mail catcher) with ``start_stack`` in a
fresh temporary folder a few times and prints each server's start-up time and the total; every
round includes formatting Kafka's log and PostgreSQL's ``initdb``, since each starts from an
empty folder as a fresh clone does. Then one restart on the kept folder (what a second
``make run`` does: no format, no initdb), and each server's RSS once it answers (the JVM's
heap is reserved up front, so the broker's RSS is most of the stack's).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench_idle import read_sample
from tickwatch_devstack.infra import start_stack

ROUNDS = 3


Round = tuple[dict[str, float], float, float, dict[str, float]]


def one_round(data: Path) -> Round:
    """(start-up s per server, total s, stop s, RSS MB per server)."""
    started = time.perf_counter()
    stack = start_stack(data, environ={})  # start every server, whatever the environment says
    total = time.perf_counter() - started
    per_server = {s.name: s.started_s for s in stack.servers}
    rss = {}
    for server in stack.servers:
        sample = read_sample(server.proc.pid)
        rss[server.name] = sample.rss_kb / 1024 if sample else 0.0
    stopping = time.perf_counter()
    stack.stop()
    return per_server, total, time.perf_counter() - stopping, rss


def main() -> None:
    folders = [Path(tempfile.mkdtemp(prefix="tickwatch-bench-")) for _ in range(ROUNDS)]
    try:
        rounds = [one_round(data) for data in folders]
        restart = one_round(folders[-1])
    finally:
        for data in folders:
            shutil.rmtree(data, ignore_errors=True)
    names = list(rounds[0][0])
    print(f"embedded stack start-up, {ROUNDS} rounds, each in a new folder (seconds)")
    print(
        f"  {'server':<10}"
        + "".join(f"{f'round {i + 1}':>10}" for i in range(ROUNDS))
        + f"{'median':>10}"
    )
    for name in [*names, "total", "stop"]:
        values = [
            r[0][name] if name in r[0] else (r[1] if name == "total" else r[2]) for r in rounds
        ]
        row = "".join(f"{v:>10.3f}" for v in values)
        print(f"  {name:<10}{row}{statistics.median(values):>10.3f}")
    print(
        "restart on the last folder (no format, no initdb): "
        + ", ".join(f"{n} {v:.2f} s" for n, v in restart[0].items())
        + f", total {restart[1]:.2f} s"
    )
    print(
        "RSS once started (MB, median of the rounds): "
        + ", ".join(f"{n} {statistics.median(r[3][n] for r in rounds):.0f}" for n in names)
    )


if __name__ == "__main__":
    main()
