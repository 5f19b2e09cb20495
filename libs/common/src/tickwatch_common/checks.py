"""Readiness probes for the shared resources."""

from __future__ import annotations

import asyncpg
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from tickwatch_common.ops import Check, CheckResult
from tickwatch_common.publish_outcomes import PublishOutcomes


def postgres_check(pool: asyncpg.Pool, critical: bool = True) -> Check:
    async def probe() -> CheckResult:
        await pool.fetchval("SELECT 1")
        return CheckResult(True)

    return Check("postgres", probe, critical)


def redis_check(client: Redis, critical: bool = True) -> Check:
    async def probe() -> CheckResult:
        await client.ping()
        return CheckResult(True)

    return Check("redis", probe, critical)


def kafka_check(producer: AIOKafkaProducer, critical: bool = True) -> Check:
    async def probe() -> CheckResult:
        # A metadata round trip proves the broker answers now, not only at start-up.
        await producer.client.fetch_all_metadata()
        return CheckResult(True)

    return Check("kafka", probe, critical)


def publishing_check(outcomes: PublishOutcomes, critical: bool = True) -> Check:
    """Fails while a topic's latest send failed or a send goes unanswered (see
    :mod:`tickwatch_common.publish_outcomes`): a broker that answers metadata requests but
    takes no records is not a service that works."""

    async def probe() -> CheckResult:
        failing = outcomes.failing()
        if failing:
            return CheckResult(
                False, "; ".join(f"{t}: {why}" for t, why in sorted(failing.items()))
            )
        return CheckResult(True)

    return Check("publishing", probe, critical)
