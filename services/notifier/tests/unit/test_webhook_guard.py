"""Webhooks reach only public addresses, checked on the addresses actually connected to."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer
from tickwatch_common.events import (
    NotificationDeadLetter,
    NotificationStatus,
    Trigger,
    TriggerChannel,
)
from tickwatch_notifier.channels import (
    ForbiddenAddress,
    PublicOnlyResolver,
    Webhook,
    guarded_connector,
)
from tickwatch_notifier.deliveries import Claim
from tickwatch_notifier.dispatcher import Dispatcher, Limits

SIXTOFOUR_LOOPBACK = "2002:7f00:1::1"
"""6to4 for 127.0.0.1: ``ipaddress`` calls it global, and the notifier once let it through."""


class HostsFile(AbstractResolver):
    """A resolver answering from a fixed table, like /etc/hosts: the contract aiohttp expects.
    ``asked`` lists the names looked up, so a test sees the check ran at connect time."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for a in self.table[host]
        ]

    async def close(self) -> None:
        return None


TRIGGER = Trigger(
    event_id="e1",
    alert_id="a1",
    user_id="u1",
    sequence=1,
    symbol="BTC-USDT",
    condition="above",
    threshold="1",
    price="2",
    ts_event=1,
    triggered_at=2,
    channels=[],
)


async def test_resolver_keeps_only_public_addresses() -> None:
    resolver = PublicOnlyResolver(HostsFile({"mixed.test": ["10.1.2.3", "93.184.215.14"]}))
    assert [r["host"] for r in await resolver.resolve("mixed.test", 443)] == ["93.184.215.14"]


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.8",
        "100.64.0.1",
        "169.254.169.254",
        "::1",
        "::ffff:127.0.0.1",
        "fe80::1%eth0",
        SIXTOFOUR_LOOPBACK,
        "64:ff9b::7f00:1",
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    ],
)
async def test_resolver_refuses_a_name_with_only_internal_addresses(address: str) -> None:
    resolver = PublicOnlyResolver(HostsFile({"inside.test": [address]}))
    with pytest.raises(ForbiddenAddress):
        await resolver.resolve("inside.test", 80)


async def test_a_name_rebound_to_loopback_is_refused_permanently_and_never_called() -> None:
    calls: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        calls.append(request.path)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with TestServer(app, host="127.0.0.1") as server:
        table = HostsFile({"hooks.example.test": ["127.0.0.1"]})
        async with aiohttp.ClientSession(connector=guarded_connector(table)) as http:
            webhook = Webhook(http, timeout_s=2)
            channel = TriggerChannel(
                type="webhook", url=f"http://hooks.example.test:{server.port}/hook", secret="s"
            )
            outcome = await webhook.send(TRIGGER, channel)
            literal = await webhook.send(
                TRIGGER,
                TriggerChannel(
                    type="webhook", url=f"http://127.0.0.1:{server.port}/hook", secret="s"
                ),
            )
    assert outcome.result == "permanent" and "no public address" in outcome.detail
    assert literal.result == "permanent"
    assert calls == []


@asynccontextmanager
async def receiver() -> AsyncIterator[tuple[int, list[str]]]:
    """A webhook receiver on loopback: its port, and the paths it was called on."""
    calls: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        calls.append(request.path)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with TestServer(app, host="127.0.0.1") as server:
        assert server.port is not None
        yield server.port, calls


@pytest.mark.parametrize(
    "host", ["2130706433", "127.1", "0x7f.1", "0177.0.0.1", "[::ffff:127.0.0.1]", "localhost"]
)
async def test_loopback_in_any_spelling_is_refused_without_connecting(host: str) -> None:
    """aiohttp connects to ``127.1`` or ``2130706433`` without asking the resolver (they look
    numeric) and the system reads them as 127.0.0.1, so the literal check must read them too."""
    table = HostsFile({})
    async with (
        receiver() as (port, calls),
        aiohttp.ClientSession(connector=guarded_connector(table)) as http,
    ):
        outcome = await Webhook(http, timeout_s=2).send(
            TRIGGER,
            TriggerChannel(type="webhook", url=f"http://{host}:{port}/hook", secret="s"),
        )
    assert outcome.result == "permanent"
    assert calls == []


class OneClaimLog:
    """A delivery log holding one trigger: claimed once, its outcomes recorded in memory."""

    def __init__(self, trigger: Trigger) -> None:
        self.trigger = trigger
        self.finished: list[tuple[str, str]] = []
        self.claims = 0

    async def claim(self, event_id: str, channel: str, lease_s: float) -> Claim | None:
        self.claims += 1
        return Claim(1, self.trigger) if self.claims == 1 else None

    async def finish(self, event_id: str, channel: str, status: str, detail: str) -> None:
        self.finished.append((status, detail))

    async def retry_later(self, event_id: str, channel: str, delay: float, detail: str) -> None:
        self.finished.append(("retrying", detail))

    async def mark_published(self, event_id: str, channel: str, status: str) -> None:
        pass


class Published:
    def __init__(self) -> None:
        self.events: list[Any] = []

    async def publish(self, topic: Any, event: Any, *, key: str) -> None:
        self.events.append(event)


async def test_a_name_resolving_to_6to4_loopback_fails_at_connect_time_and_is_not_sent() -> None:
    trigger = TRIGGER.model_copy(
        update={
            "channels": [
                TriggerChannel(type="webhook", url="https://hooks.example.test/hook", secret="s")
            ]
        }
    )
    table = HostsFile({"hooks.example.test": [SIXTOFOUR_LOOPBACK]})
    log, published = OneClaimLog(trigger), Published()
    async with aiohttp.ClientSession(connector=guarded_connector(table)) as http:
        dispatcher = Dispatcher(
            log,  # type: ignore[arg-type]
            published,  # type: ignore[arg-type]
            {"webhook": Webhook(http, timeout_s=2)},
            Limits(),
        )
        await asyncio.wait_for(dispatcher._deliver(trigger, "webhook"), 30)
    assert table.asked == ["hooks.example.test"]  # refused on the address it would connect to
    [(status, detail)] = log.finished
    assert status == "failed" and "no public address" in detail
    statuses = [e for e in published.events if isinstance(e, NotificationStatus)]
    assert [(s.channel, s.status) for s in statuses] == [("webhook", "failed")]
    dead = [e for e in published.events if isinstance(e, NotificationDeadLetter)]
    assert len(dead) == 1 and "no public address" in dead[0].reason
