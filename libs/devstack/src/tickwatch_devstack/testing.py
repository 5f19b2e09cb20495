"""Test code that several services' integration tests and the end-to-end tests share.

Each service's tests and ``tests/e2e`` used to carry their own copy of these: waiting for a
condition with a deadline, collecting a topic from its first offset, building a replay tick,
reading a WebSocket until a matching message, running a service process off the event loop.
They live here, next to the servers those tests run against, so that a fix reaches every copy.
Whatever here waits, waits for a condition with a deadline, never for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from tickwatch_common.events import Event, Tick
from tickwatch_common.kafka import client_options
from tickwatch_common.topics import BY_NAME, Topic

from tickwatch_devstack.services import service_process

EventT = TypeVar("EventT", bound=Event)


async def wait_until(
    predicate: Callable[[], object | Awaitable[object]],
    timeout_s: float = 30,
    what: str = "",
    interval_s: float = 0.02,
) -> float:
    """Poll ``predicate`` (a plain function or a coroutine function, such as a query) every
    ``interval_s`` until it is truthy; answer the seconds it took. ``TimeoutError`` naming
    ``what`` after ``timeout_s``: the one deadline loop of the tests, so none sleeps a fixed time.
    """
    started = time.monotonic()
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)


def replay_tick(
    symbol: str,
    price: str,
    ts_event: int,
    *,
    ts_ingest: int | None = None,
    volume_24h: str | None = None,
    change_24h_pct: str | None = None,
) -> Tick:
    """A tick of ``symbol`` (``BASE-QUOTE``) as the replay source publishes it; ``ts_ingest``
    defaults to ``ts_event``."""
    base, quote = symbol.split("-")
    fields: dict[str, Any] = {
        "symbol": symbol,
        "base": base,
        "quote": quote,
        "source": "replay",
        "price": price,
        "ts_event": ts_event,
        "ts_ingest": ts_event if ts_ingest is None else ts_ingest,
    }
    if volume_24h is not None:
        fields["volume_24h"] = volume_24h
    if change_24h_pct is not None:
        fields["change_24h_pct"] = change_24h_pct
    return Tick.model_validate(fields)


class TopicCollector:
    """Every event on ``topics`` from offset 0, read in the background without a consumer
    group, so a test sees what a service published before and after the collector started.

    Offset 0 is sought explicitly (the reader's ``auto_offset_reset=earliest`` moves it to the
    log's real start where retention or compaction has removed the head). Use it as an async
    context manager, or call ``start`` and ``stop``.
    """

    def __init__(self, bootstrap_servers: str, topics: Sequence[Topic]) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topics = tuple(topics)
        self.events: list[Event] = []
        self.malformed = 0  # records that are no event of their topic, skipped
        self._task: asyncio.Task[None] | None = None

    def received(self, model: type[EventT]) -> list[EventT]:
        """The events of type ``model`` collected so far, in arrival order."""
        return [e for e in self.events if isinstance(e, model)]

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **client_options(self.bootstrap_servers), group_id=None, auto_offset_reset="earliest"
        )
        await consumer.start()
        partitions = [TopicPartition(t.name, p) for t in self.topics for p in range(t.partitions)]
        consumer.assign(partitions)
        for partition in partitions:
            consumer.seek(partition, 0)

        async def collect() -> None:
            try:
                async for record in consumer:
                    if record.value is None:
                        continue
                    try:  # another test's poison (tests/e2e/test_poison_records.py) is skipped
                        event = BY_NAME[record.topic].model.model_validate_json(record.value)
                    except ValueError:  # pydantic's ValidationError is one
                        self.malformed += 1
                        continue
                    self.events.append(event)
            finally:
                await consumer.stop()

        self._task = asyncio.create_task(collect())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def receive_json_until(
    ws: aiohttp.ClientWebSocketResponse,
    matches: Callable[[dict[str, Any]], object],
    timeout_s: float = 15,
) -> dict[str, Any]:
    """Read JSON text messages from ``ws`` until one ``matches``; answer that one. Fails (with
    every message skipped) after ``timeout_s``, or on a message that is not text."""
    deadline = time.monotonic() + timeout_s
    seen: list[Any] = []
    while True:
        try:
            msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            raise AssertionError(f"no matching message within {timeout_s}s; got {seen}") from None
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg, seen)
        body = msg.json()
        if matches(body):
            return body  # type: ignore[no-any-return]
        seen.append(body)


async def recreate_topic(
    bootstrap_servers: str,
    name: str,
    partitions: int,
    configs: dict[str, str] | None = None,
    timeout_s: float = 30,
) -> None:
    """Delete ``name`` and create it again: a new, empty log (a new topic id) under the same
    name, as after a lost broker or a restore. The admin client answers error codes rather than
    raising, and a deletion finishes after its answer, so this waits until the topic is gone,
    then creates it again until the broker accepts, within ``timeout_s``."""
    admin = AIOKafkaAdminClient(**client_options(bootstrap_servers), request_timeout_ms=15000)
    await admin.start()
    deadline = time.monotonic() + timeout_s
    try:
        if name in await admin.list_topics():
            await admin.delete_topics([name], timeout_ms=15000)
        while name in await admin.list_topics():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} still exists after its deletion")
            await asyncio.sleep(0.1)
        while True:
            response = await admin.create_topics(
                [NewTopic(name, partitions, 1, topic_configs=configs or {})], timeout_ms=15000
            )
            [(_, code, message)] = response.topic_errors
            if code == 0:
                break
            if code != TopicAlreadyExistsError.errno or time.monotonic() > deadline:
                raise RuntimeError(f"creating {name}: error {code} {message}")
            await asyncio.sleep(0.1)
        # The broker answers the creation before its metadata lists the topic; a client asking
        # at once (ensure_topics, a producer) would find it missing and create it again.
        while name not in await admin.list_topics():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} created but never listed")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


def log_tail(path: Path, chars: int = 4000) -> str:
    """The last ``chars`` characters of a service's log, for a failure message."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


@contextlib.asynccontextmanager
async def service_running_off_loop(
    service: str, env: dict[str, str], port: int, log_path: Path, timeout_s: float = 30
) -> AsyncIterator[None]:
    """``service_process`` entered and left in a thread: its blocking wait for ``/ready`` must
    not stop the test's event loop, where fakes and receivers answer the service."""
    manager = service_process(service, env, port, log_path=log_path, timeout_s=timeout_s)
    await asyncio.to_thread(manager.__enter__)
    try:
        yield
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)


@dataclass
class ApiClient:
    """The public API, as a client with a bearer token uses it (``base``: the gateway's URL)."""

    http: aiohttp.ClientSession
    base: str
    token: str = ""

    async def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        """``path`` under ``/api/v1``; fails unless the answer's status is ``expect``."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.http.request(
            method, f"{self.base}/api/v1{path}", json=body, headers=headers
        ) as resp:
            text = await resp.text()
            assert resp.status == expect, f"{method} {path} -> {resp.status}: {text[:500]}"
            return json.loads(text) if text else None


async def dead_letter_sources(
    bootstrap: str, topics: list[str], timeout_s: float = 30
) -> dict[str, int]:
    """How many entries of each ``<topic>.dlq`` name each source (``topic/partition/offset``),
    read to the DLQs' current ends."""
    deadline = time.monotonic() + timeout_s
    reader = AIOKafkaConsumer(
        **client_options(bootstrap), group_id=None, auto_offset_reset="earliest"
    )
    await reader.start()
    try:
        tps = [TopicPartition(f"{topic}.dlq", 0) for topic in topics]
        reader.assign(tps)
        ends = await reader.end_offsets(tps)
        for tp in tps:
            reader.seek(tp, 0)
        counts: dict[str, int] = {}
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"DLQs not read to their ends in {timeout_s}s: {remaining}")
            batches = await reader.getmany(*remaining, timeout_ms=500)
            for records in batches.values():
                for record in records:
                    headers = dict(record.headers or ())
                    source = headers.get("dlq_source", b"").decode()
                    counts[source] = counts.get(source, 0) + 1
            for tp in list(remaining):
                if await reader.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return counts
    finally:
        await reader.stop()
