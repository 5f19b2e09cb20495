"""The rules ``make run`` supervises by, as plain objects with no I/O, so tests need only data.

- :class:`RestartTracker`: when a service that died is started again (backoff doubling from
  ``initial_s`` to ``cap_s``, back to ``initial_s`` once a run lasted ``stable_s``), how many
  restarts so far, and whether the service is *failing* (it keeps dying soon after each start).
  A failing service is still retried at the cap: it is named, never given up on.
- :class:`ReadinessWatch`: turns the ``/ready`` answers polled after start into the changes
  worth a line on the terminal (turned unready, recovered), not one line per poll.
- :func:`status_lines`: the table ``python -m tickwatch_devstack status`` prints from the status
  file ``up`` keeps in ``.data/run/status.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


@dataclass(frozen=True)
class RestartPolicy:
    initial_s: float = 1.0
    cap_s: float = 30.0
    stable_s: float = 60.0  # a run this long resets the backoff and clears "failing"
    failing_after: int = 3  # this many short runs in a row name the service as failing

    def delay(self, short_runs: int) -> float:
        """The wait before the next start after ``short_runs`` short runs in a row (1, 2, ...)."""
        return float(min(self.cap_s, self.initial_s * 2 ** max(0, short_runs - 1)))


class RestartTracker:
    """One service's starts and exits, in the supervisor's monotonic clock."""

    def __init__(self, policy: RestartPolicy, started_at: float) -> None:
        self.policy = policy
        self.started_at = started_at
        self.restarts = 0
        self.short_runs = 0  # runs in a row that ended before ``stable_s``

    @property
    def failing(self) -> bool:
        return self.short_runs >= self.policy.failing_after

    def exited(self, now: float) -> float:
        """Record an exit; answer how long to wait before starting the service again."""
        if now - self.started_at >= self.policy.stable_s:
            self.short_runs = 0
        self.short_runs += 1
        return self.policy.delay(self.short_runs)

    def restarted(self, now: float) -> None:
        self.restarts += 1
        self.started_at = now

    def running(self, now: float) -> bool:
        """Called while the service runs; True once, when a run has lasted long enough to end a
        failing streak (the supervisor says so)."""
        if self.short_runs and now - self.started_at >= self.policy.stable_s:
            was_failing = self.failing
            self.short_runs = 0
            return was_failing
        return False


class Readiness(Enum):
    READY = "ready"  # first ready since this process started
    UNREADY = "unready"  # was ready, is not any more
    RECOVERED = "recovered"  # was unready after being ready, is ready again


class ReadinessWatch:
    """One process's ``/ready`` history: ``None`` until it has been ready once."""

    def __init__(self) -> None:
        self.ready: bool | None = None

    def observe(self, ok: bool) -> Readiness | None:
        """Record one answer; answer the change it makes, if any."""
        before = self.ready
        if ok:
            self.ready = True
        elif before is not None:
            self.ready = False  # still starting stays None: not ready yet is not "turned unready"
        if ok and before is None:
            return Readiness.READY
        if ok and before is False:
            return Readiness.RECOVERED
        if not ok and before is True:
            return Readiness.UNREADY
        return None


def status_lines(status: dict[str, Any], now: float) -> list[str]:
    """The status file as a table: one line per service, its state, restarts and last exit."""
    lines = [f"make run (pid {status.get('pid')}), since {status.get('started', '?')}"]
    for name, entry in status.get("services", {}).items():
        state = str(entry.get("state", "?"))
        if entry.get("failing"):
            state += ", FAILING"
        detail = ""
        next_at = entry.get("next_start_at")
        if state.startswith("restarting") and next_at is not None:
            detail = f"   next start in {max(0.0, float(next_at) - now):.0f} s"
        if entry.get("last_exit") is not None:
            detail += f"   last exit: code {entry['last_exit']}"
            if entry.get("last_line"):
                detail += f" ({str(entry['last_line'])[:120]})"
        if entry.get("why"):
            detail += f"   why: {entry['why']}"
        lines.append(
            f"  {name:<13}:{entry.get('port', '?'):<6} {state:<20} "
            f"restarts {entry.get('restarts', 0):<3} pid {entry.get('pid') or '-'}{detail}"
        )
    return lines
