"""pytest fixtures: the real servers, started once per test session.

``stack`` starts Tansu, PostgreSQL, Redis and the mail catcher on free ports (or uses the servers
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
