"""Settings are checked at boot, before anything connects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_a_missing_required_setting_stops_the_service_at_boot_naming_it(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    result = subprocess.run(
        [sys.executable, "-m", "tickwatch_portfolio"],
        env=env,
        cwd=tmp_path,  # no .env here
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr
    assert "KAFKA_BOOTSTRAP_SERVERS" not in result.stderr
