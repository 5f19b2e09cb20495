"""Positioning of the group-less consumers (every replica reads every record)."""

from __future__ import annotations

import asyncio
import time

import structlog
from aiokafka import AIOKafkaConsumer

log = structlog.get_logger(__name__)


async def start_at_end(consumer: AIOKafkaConsumer, timeout_s: float = 30) -> None:
    """Wait for the partitions and fix the position at their end, so no tick published after
    this returns is missed (a lazily resolved position could skip the first ones)."""
    deadline = time.monotonic() + timeout_s
    while not consumer.assignment():
        if time.monotonic() > deadline:
            raise TimeoutError("no partitions assigned to the market feed consumer")
        await asyncio.sleep(0.05)
    partitions = list(consumer.assignment())
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)
    log.info("market_feed_positioned", partitions=len(partitions))
