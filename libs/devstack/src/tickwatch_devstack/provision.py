"""Prepare a set of servers for Tickwatch: create every contract topic, apply every migration.

Used by ``make run`` (:mod:`tickwatch_devstack.supervisor`) and, in containers, by the one-shot
``init`` service of ``docker-compose.yml`` (``python -m tickwatch_devstack init``).

Each service ships its migrations as ``src/tickwatch_<svc>/migrations/*.sql`` (found through the
installed package, so it works from a wheel too) or, failing that, ``services/<svc>/migrations``
in a checkout; they go into the schema named after the service (``alert-engine`` ->
``alert_engine``). A service without either folder has no migrations yet.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from tickwatch_common.kafka import ensure_topics
from tickwatch_common.postgres import migrate
from tickwatch_common.settings import KafkaSettings

from tickwatch_devstack.services import SERVICES, package

REPO_ROOT = Path(__file__).resolve().parents[4]


def schema_name(service: str) -> str:
    return service.replace("-", "_")


def migrations_dir(service: str) -> Path | None:
    """The folder of ``service``'s migration files, or None when it has none."""
    spec = importlib.util.find_spec(package(service))
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "migrations"
            if candidate.is_dir():
                return candidate
    candidate = REPO_ROOT / "services" / service / "migrations"
    return candidate if candidate.is_dir() else None


@dataclass(frozen=True)
class MigrationOutcome:
    service: str
    applied: list[str]
    error: str | None = None


async def migrate_all(
    database_url: str, services: tuple[str, ...] = SERVICES
) -> list[MigrationOutcome]:
    """Apply each service's migrations to its own schema; one failure does not stop the others."""
    outcomes = []
    for service in services:
        directory = migrations_dir(service)
        if directory is None:
            outcomes.append(MigrationOutcome(service, []))
            continue
        try:
            applied = await migrate(database_url, schema_name(service), directory)
        except Exception as exc:
            outcomes.append(MigrationOutcome(service, [], f"{type(exc).__name__}: {exc}"))
        else:
            outcomes.append(MigrationOutcome(service, applied))
    return outcomes


async def create_topics(kafka: KafkaSettings | str) -> list[str]:
    """Create every contract topic and its ``.dlq`` that is missing; returns the created names.
    ``kafka``: the settings (with their SASL principal), or a PLAINTEXT broker's address."""
    return await ensure_topics(kafka)
