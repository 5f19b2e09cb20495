"""pytest fixtures: the real servers, started once per test session.

``stack`` starts Apache Kafka, PostgreSQL, Redis and the mail catcher on free ports (or uses the servers
named by ``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` / ``REDIS_URL`` / ``SMTP_HOST``) and
creates every contract topic. ``fresh_database`` gives each test its own empty database.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from tickwatch_common.kafka import ensure_topics

from tickwatch_devstack.infra import Stack, create_database, start_stack


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    data_dir = Path(tempfile.mkdtemp(prefix="tickwatch-test-"))
    started = start_stack(data_dir)
    try:
        asyncio.run(ensure_topics(started.kafka_bootstrap_servers))
        yield started
    finally:
        started.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
async def fresh_database(stack: Stack) -> AsyncIterator[str]:
    """The URL of a new, empty database on the stack's PostgreSQL server."""
    server = stack.database_url.rsplit("/", 1)[0] + "/postgres"
    yield await create_database(server, f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def stack_env(stack: Stack) -> dict[str, str]:
    """The environment a service process needs to reach the stack."""
    return {**os.environ, **stack.env()}


# ---------------------------------------------------------------- selecting by the real servers


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tickwatch")
    group.addoption(
        "--servers-only",
        action="store_true",
        help="run only the tests that use the real servers: those that use the `stack` fixture"
        " (directly or through another fixture) or are marked integration or e2e",
    )
    group.addoption(
        "--no-servers",
        action="store_true",
        help="run only the tests that do not use the real servers",
    )


def uses_servers(item: pytest.Item) -> bool:
    """Judged by the test's fixtures first, since a test may lack the marker it deserves."""
    if "stack" in getattr(item, "fixturenames", ()):
        return True
    return any(item.iter_markers("integration")) or any(item.iter_markers("e2e"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    servers_only = config.getoption("--servers-only")
    no_servers = config.getoption("--no-servers")
    if not (servers_only or no_servers):
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        (keep if uses_servers(item) == bool(servers_only) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
