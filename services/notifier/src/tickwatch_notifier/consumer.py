"""Decode -> record in the delivery log -> commit. Sending happens beside, in the dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from tickwatch_common.events import Trigger
from tickwatch_common.kafka import Delivered

from tickwatch_notifier.dispatcher import Dispatcher


class TriggerConsumer:
    def __init__(self, consumer: AIOKafkaConsumer, dispatcher: Dispatcher) -> None:
        self.consumer = consumer
        self.dispatcher = dispatcher
        self.assigned = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._positioning: asyncio.Task[None] | None = None

    def listener(self) -> ConsumerRebalanceListener:
        worker = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                pass

            async def on_partitions_assigned(self, partitions: Any) -> None:
                worker._positioning = asyncio.create_task(worker._positioned(set(partitions)))

        return Listener()

    async def _positioned(self, partitions: set[TopicPartition]) -> None:
        """Ready once every assigned partition has a position: a new group resets its offsets
        lazily, and a trigger published before that reset could otherwise be skipped."""
        with contextlib.suppress(Exception):
            for tp in partitions:
                await self.consumer.position(tp)
            self.assigned.set()

    async def handle(self, batch: list[Delivered]) -> None:
        triggers = [item.event for item in batch if isinstance(item.event, Trigger)]
        await self.dispatcher.accept(triggers)
        # Every delivery of the batch is in the log now; the commit is safe to lose (a
        # redelivered trigger finds its rows and sends nothing twice), so a rebalance that
        # refuses it is no error.
        tp = TopicPartition(batch[-1].topic, batch[-1].partition)
        with contextlib.suppress(KafkaError, AssertionError):
            await self.consumer.commit({tp: batch[-1].offset + 1})
