"""How long the embedded servers take to start and stop here (``make bench`` runs this).

Starts the whole stack (Tansu, PostgreSQL, Redis, mail catcher) with ``start_stack`` in a fresh
temporary folder a few times and prints each server's start-up time and the total; every round
includes PostgreSQL's ``initdb``, since each starts from an empty folder as a fresh clone does.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

from tickwatch_devstack.infra import start_stack

ROUNDS = 3


def one_round() -> tuple[dict[str, float], float, float]:
    data = Path(tempfile.mkdtemp(prefix="tickwatch-bench-"))
    try:
        started = time.perf_counter()
        stack = start_stack(data, environ={})  # start every server, whatever the environment says
        total = time.perf_counter() - started
        per_server = {s.name: s.started_s for s in stack.servers}
        stopping = time.perf_counter()
        stack.stop()
        return per_server, total, time.perf_counter() - stopping
    finally:
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    rounds = [one_round() for _ in range(ROUNDS)]
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


if __name__ == "__main__":
    main()
