"""The supervisor's rules with plain data: restart backoff, failing, readiness changes, status."""

from __future__ import annotations

from tickwatch_devstack.supervision import (
    Readiness,
    ReadinessWatch,
    RestartPolicy,
    RestartTracker,
    status_lines,
)

POLICY = RestartPolicy(initial_s=1, cap_s=30, stable_s=60, failing_after=3)


def die_quickly(tracker: RestartTracker, times: int, at: float) -> tuple[list[float], float]:
    """The service dies 0.5 s after each start, ``times`` times; answers the waits and the clock."""
    delays = []
    for _ in range(times):
        at += 0.5
        delay = tracker.exited(at)
        delays.append(delay)
        at += delay
        tracker.restarted(at)
    return delays, at


def test_the_wait_doubles_from_one_second_to_the_cap_and_stays_there() -> None:
    tracker = RestartTracker(POLICY, started_at=0)
    delays, _ = die_quickly(tracker, 8, at=0)
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert tracker.restarts == 8


def test_a_service_that_keeps_dying_is_failing_but_still_retried() -> None:
    tracker = RestartTracker(POLICY, started_at=0)
    die_quickly(tracker, 2, at=0)
    assert not tracker.failing
    _, at = die_quickly(tracker, 20, at=100)
    assert tracker.failing
    assert tracker.exited(at + 1) == 30  # retried at the cap, never given up


def test_a_run_that_lasted_resets_the_backoff() -> None:
    tracker = RestartTracker(POLICY, started_at=0)
    _, at = die_quickly(tracker, 4, at=0)
    assert tracker.failing
    assert tracker.exited(at + 61) == 1  # it had stayed up 61 s: start from 1 s again
    assert not tracker.failing


def test_staying_up_ends_a_failing_streak_once() -> None:
    tracker = RestartTracker(POLICY, started_at=0)
    _, at = die_quickly(tracker, 3, at=0)
    assert tracker.failing
    assert not tracker.running(at + 30)
    assert tracker.running(at + 60)  # one line: "no longer failing"
    assert not tracker.failing
    assert not tracker.running(at + 90)


def test_readiness_says_turned_unready_and_recovered_once_each() -> None:
    watch = ReadinessWatch()
    answers = [False, False, True, True, False, False, True, True]
    changes = [watch.observe(ok) for ok in answers]
    assert changes == [
        None,  # still starting: not a warning
        None,
        Readiness.READY,
        None,
        Readiness.UNREADY,
        None,
        Readiness.RECOVERED,
        None,
    ]


def test_status_lines_name_state_restarts_and_last_exit() -> None:
    status = {
        "pid": 42,
        "started": "2026-12-02 13:00:00",
        "services": {
            "gateway": {"state": "ready", "restarts": 0, "pid": 7, "port": 8080},
            "notifier": {
                "state": "restarting",
                "failing": True,
                "restarts": 5,
                "pid": None,
                "port": 8083,
                "last_exit": 1,
                "last_line": "boom",
                "next_start_at": 1030.0,
            },
        },
    }
    gateway, notifier = status_lines(status, now=1000.0)[1:]
    assert "gateway" in gateway and "ready" in gateway and "restarts 0" in gateway
    assert "restarting, FAILING" in notifier and "restarts 5" in notifier
    assert "next start in 30 s" in notifier and "last exit: code 1 (boom)" in notifier
