"""The portfolio service as a real process against the real servers."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import asyncpg
import pytest
from tickwatch_devstack.infra import free_port
from tickwatch_devstack.services import service_process

pytestmark = pytest.mark.integration


def get(port: int, path: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return resp.status, resp.read()


async def test_boots_migrates_answers_ops_routes_and_stops_cleanly_on_sigterm(
    stack_env: dict[str, str], fresh_database: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **stack_env,
        "DATABASE_URL": fresh_database,
        "INTERNAL_API_SECRET": "6i8zwuLqMfLKgzK7AeJdoFCJNk2H1XF-7v31FDxUEsTdlwFP",
    }
    with service_process("portfolio", env, port, log_path=tmp_path / "portfolio.log") as proc:
        status, body = get(port, "/ready")
        assert status == 200
        ready = json.loads(body)
        assert ready["status"] == "ready"
        assert set(ready["checks"]) == {"postgres", "kafka", "market_feed"}
        assert json.loads(get(port, "/health")[1]) == {"status": "ok", "service": "portfolio"}
        assert b"tickwatch_messages_published_total" in get(port, "/metrics")[1]
    assert proc.returncode == 0, (tmp_path / "portfolio.log").read_text()

    conn = await asyncpg.connect(fresh_database)
    try:
        tables = {
            r["table_name"]
            for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'portfolio'"
            )
        }
        cash_type = await conn.fetchval(
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_schema = 'portfolio' AND table_name = 'accounts' AND column_name = 'cash'"
        )
    finally:
        await conn.close()
    assert {
        "accounts",
        "trades",
        "holdings",
        "deposits",
        "orders",
        "idempotency_keys",
        "valuation_snapshots",
        "schema_migrations",
    } <= tables
    assert cash_type == "numeric"
