"""The short chaos run inside ``make test``: one fault of each kind (two service kills, the
broker, PostgreSQL, Redis, SMTP) on the real servers under a steady stream of a few hundred
triggers, and not one firing lost or duplicated beyond the sends in flight at a kill.

It starts its own servers (it kills and restarts them, so it cannot share the session's) and
runs as a process (``python -m tickwatch_devstack.chaos --short``), as ``make chaos`` does; its
table is printed on failure, and with ``-s``. Meant to end within 4 minutes on 2 cores; the run
has its own deadline, and the test allows it a margin for start-up and clean-up on a busy host.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from tickwatch_devstack.chaos.plan import SHORT

pytestmark = pytest.mark.e2e

MARGIN_S = 60  # start-up of the JVM and clean-up, beyond the run's own deadline


@pytest.mark.timeout(SHORT.deadline_s + MARGIN_S + 30)
def test_one_fault_of_each_kind_loses_nothing_and_duplicates_only_sends_in_flight() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tickwatch_devstack.chaos", "--short"],
        capture_output=True,
        text=True,
        timeout=SHORT.deadline_s + MARGIN_S,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "PASS: 0 lost" in result.stdout
