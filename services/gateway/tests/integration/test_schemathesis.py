"""Schemathesis fuzzes the generated OpenAPI document against the gateway process: no 5xx, and
no answer that breaks the schema (status codes, content types, bodies, headers)."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest
from tickwatch_devstack.infra import Stack, free_port
from tickwatch_devstack.services import service_process

from .conftest import JWT_SECRET

pytestmark = pytest.mark.integration

# Three rules a JSON Schema cannot state, each answered 422 naming the field, so a request valid
# by the schema alone may rightly be refused there (every other rule is in the schema):
# - an alert's symbol must be one this gateway serves (its SYMBOLS setting; GET /markets lists
#   them) and a webhook host must resolve to a public address (DNS, at save time);
# - a PATCH is merged with the stored alert, and the merged alert must be complete;
# - a history range's start must not be after its end.
CONFIG = """
[[operations]]
include-path-regex = "^/api/v1/alerts"
include-method = ["POST", "PATCH"]

[operations.checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]

[[operations]]
include-path = "/api/v1/prices/{symbol}/history"

[operations.checks.positive_data_acceptance]
expected-statuses = ["2xx", "304", "401", "404", "422", "429"]
"""


async def _login(http: aiohttp.ClientSession, base: str, email: str) -> str:
    creds = {"email": email, "password": "fuzz-password"}
    await http.post(f"{base}/api/v1/auth/register", json=creds)
    async with http.post(f"{base}/api/v1/auth/login", json=creds) as resp:
        token: str = (await resp.json())["access_token"]
        return token


async def _schemathesis(base: str, cwd: Path, *options: str, examples: int = 25) -> tuple[int, str]:
    cli = Path(sys.executable).parent / "schemathesis"
    proc = await asyncio.create_subprocess_exec(
        str(cli),
        "run",
        f"{base}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", str(examples)),
        "--seed",
        "1",
        "--workers",
        "2",
        "--generation-database",
        "none",
        "--no-color",
        *options,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    stack: Stack, fresh_database: str, tmp_path: Path
) -> None:
    """Every check, over every route, without credentials and with a bearer token. Logging
    out ends the token it is called with, so it is fuzzed on its own login, last."""
    port, portfolio_port = free_port(), free_port()
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
        "INTERNAL_API_SECRET": secrets.token_urlsafe(48),
        "PORTFOLIO_URL": f"http://127.0.0.1:{portfolio_port}",
        "PORTFOLIO_PORT": str(portfolio_port),
    }
    base = f"http://127.0.0.1:{port}"
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    logout = "/api/v1/auth/logout"
    with (
        service_process("portfolio", env, portfolio_port, log_path=tmp_path / "portfolio.log"),
        service_process("gateway", env, port, log_path=tmp_path / "gateway.log"),
    ):
        async with aiohttp.ClientSession() as http:
            token = await _login(http, base, "fuzz@example.com")
            logout_token = await _login(http, base, "fuzz-logout@example.com")
        # The three runs at once: each waits on the gateway most of the time, and the logout
        # run ends only its own token.
        names = ("without credentials", "with a token", "logout with a token")
        results = await asyncio.gather(
            # Without credentials most operations stop at the 401: fewer examples find it all.
            _schemathesis(base, tmp_path, examples=10),
            _schemathesis(
                base, tmp_path, "--exclude-path", logout, "-H", f"Authorization: Bearer {token}"
            ),
            _schemathesis(
                base,
                tmp_path,
                "--include-path",
                logout,
                "-H",
                f"Authorization: Bearer {logout_token}",
                examples=10,  # one operation, no parameters beyond its optional body
            ),
        )
        runs = dict(zip(names, results, strict=True))
    failed = {name: text[-6000:] for name, (code, text) in runs.items() if code != 0}
    assert not failed, "\n\n".join(f"=== {name}\n{text}" for name, text in failed.items())
    for name, (_, text) in runs.items():
        generated = re.search(r"(\d+) generated", text)
        assert generated is not None and int(generated.group(1)) > 0, f"{name}: nothing tested"
        if name != "without credentials":
            assert "Authentication failed" not in text, f"{name}: the token was refused"
