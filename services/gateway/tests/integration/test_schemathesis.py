"""Schemathesis fuzzes the generated OpenAPI document against the gateway process: no 5xx, and
no answer that breaks the schema (status codes, content types, bodies, headers)."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest
from tickwatch_devstack.infra import Stack, free_port
from tickwatch_devstack.services import service_process

from .conftest import JWT_SECRET

pytestmark = pytest.mark.integration

# An alert body has rules a JSON Schema cannot state (a symbol the gateway knows, a webhook host
# that resolves to a public address, the merge of a PATCH with the stored alert); breaking one
# answers 422 naming the field, so a schema-valid body may rightly be refused there.
ALERT_WRITES_CONFIG = """
[[operations]]
include-path-regex = "^/api/v1/alerts"
include-method = ["POST", "PATCH"]

[operations.checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]
"""


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    stack: Stack, fresh_database: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        **stack.env(),
        "DATABASE_URL": fresh_database,
        "JWT_SECRET": JWT_SECRET,
        "REDIS_PREFIX": f"st-{uuid.uuid4().hex[:8]}:",
        "CANDLE_CONSUMER_GROUP": f"st-{uuid.uuid4().hex[:8]}",
        "RATE_LIMIT_DEFAULT": "1000000/minute",
        "RATE_LIMIT_AUTH": "1000000/minute",
        "GATEWAY_HOST": "127.0.0.1",
    }
    base = f"http://127.0.0.1:{port}"
    with service_process("gateway", env, port, log_path=tmp_path / "gateway.log"):
        async with aiohttp.ClientSession() as http:
            creds = {"email": "fuzz@example.com", "password": "fuzz-password"}
            await http.post(f"{base}/api/v1/auth/register", json=creds)
            async with http.post(f"{base}/api/v1/auth/login", json=creds) as resp:
                token = (await resp.json())["access_token"]
        cli = Path(sys.executable).parent / "schemathesis"
        (tmp_path / "schemathesis.toml").write_text(ALERT_WRITES_CONFIG)
        proc = await asyncio.create_subprocess_exec(
            str(cli),
            "run",
            f"{base}/openapi.json",
            "--checks",
            "all",
            # Cross-field rules (start after end, "above" without target_price, a webhook_url
            # without the webhook channel) answer 422 to bodies JSON Schema alone calls valid;
            # every other check, rejection of schema-violating input included, stays on.
            "--exclude-checks",
            "positive_data_acceptance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25"),
            "--seed",
            "1",
            "--workers",
            "2",
            "--generation-database",
            "none",
            "--no-color",
            "--exclude-path",
            "/api/v1/auth/logout",
            "-H",
            f"Authorization: Bearer {token}",
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 240)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
