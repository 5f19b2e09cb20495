"""``/metrics`` only on the ops listener (GATEWAY_OPS_PORT); ``/health`` and ``/ready`` on both it
and the public port, which load balancers and Kubernetes probe."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from tickwatch_devstack.testing import wait_until
from tickwatch_gateway.app import build_ops_app

Client = TestClient[Any, Any]


async def test_metrics_are_on_the_ops_listener_only(client: Client) -> None:
    public = await client.get("/metrics")
    assert public.status == 404
    assert public.content_type == "application/problem+json"
    assert (await public.json())["status"] == 404
    async with TestClient(TestServer(build_ops_app(client.server.app))) as ops:
        scraped = await ops.get("/metrics")
        assert scraped.status == 200
        assert scraped.content_type == "text/plain"
        assert "tickwatch_gateway_" in await scraped.text()

        async def ready_on_the_same_checks() -> bool:
            answers = [await c.get("/ready") for c in (client, ops)]
            if any(a.status != 200 for a in answers):
                return False
            first, second = [(await a.json())["checks"].keys() for a in answers]
            return bool(first == second)  # consumers add theirs as they start

        await wait_until(ready_on_the_same_checks, what="/ready 200 on both, the same checks")
        for c in (client, ops):
            health = await c.get("/health")
            assert health.status == 200
            assert await health.json() == {"status": "ok", "service": "gateway"}
