"""Webhooks reach only public addresses, checked on the addresses actually connected to."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer
from tickwatch_common.events import Trigger, TriggerChannel
from tickwatch_notifier.channels import (
    ForbiddenAddress,
    PublicOnlyResolver,
    Webhook,
    guarded_connector,
)


class HostsFile(AbstractResolver):
    """A resolver answering from a fixed table, like /etc/hosts: the contract aiohttp expects."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
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
    "address", ["127.0.0.1", "10.0.0.8", "169.254.169.254", "::1", "::ffff:127.0.0.1"]
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
