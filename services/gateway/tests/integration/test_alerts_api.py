"""Alert CRUD over HTTP: validation, SSRF refusal, ownership, pagination, cache invalidation."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from redis.asyncio import Redis
from tickwatch_devstack.infra import Stack, free_port
from tickwatch_gateway.runtime.keys import RUNTIME_SETTINGS

from .alerts_support import Client, above, alerts_client, create
from .conftest import MakeClient, signup

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(make_client: MakeClient) -> Client:
    return await alerts_client(make_client)


async def test_create_answers_the_alert_and_get_reads_it_back(client: Client) -> None:
    alice = await signup(client)
    created = await create(client, alice["headers"], expires_at="2099-01-01T00:00:00Z")
    assert created["status"] == "active"
    assert created["trigger_count"] == 0
    assert created["triggered_at"] is None
    assert created["target_price"] == "70000"
    assert created["expires_at"] == "2099-01-01T00:00:00.000Z"
    assert created["created_at"].endswith("Z") and created["updated_at"].endswith("Z")
    assert "webhook_secret" not in created
    resp = await client.get(f"/api/v1/alerts/{created['id']}", headers=alice["headers"])
    assert resp.status == 200
    assert await resp.json() == created


async def test_pct_change_alert_takes_pct_and_window(client: Client) -> None:
    alice = await signup(client)
    body = above(condition="pct_change", target_price=None, pct="5", window_seconds=3600)
    del body["target_price"]
    resp = await client.post("/api/v1/alerts", json=body, headers=alice["headers"])
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert (created["pct"], created["window_seconds"], created["target_price"]) == ("5", 3600, None)


INVALID = [
    ({"symbol": "DOGE-NOPE"}, "symbol"),
    ({"target_price": "0"}, "target_price"),
    ({"target_price": "-5"}, "target_price"),
    ({"target_price": None}, "target_price"),
    ({"target_price": 70000}, "target_price"),
    ({"condition": "sideways"}, "condition"),
    ({"condition": "pct_change", "target_price": None, "window_seconds": 60}, "pct"),
    ({"condition": "pct_change", "target_price": None, "pct": "5"}, "window_seconds"),
    ({"condition": "pct_change", "pct": "5", "window_seconds": 60}, "target_price"),
    ({"frequency": "daily"}, "frequency"),
    ({"cooldown_seconds": -1}, "cooldown_seconds"),
    ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ({"channels": []}, "channels"),
    ({"channels": ["sms"]}, "channels.0"),
    ({"channels": ["webhook"]}, "webhook_url"),
    ({"channels": ["webhook"], "webhook_url": "ftp://93.184.216.34/"}, "webhook_url"),
    ({"unknown": 1}, "unknown"),
]


async def test_each_broken_rule_is_a_422_naming_the_field(client: Client) -> None:
    alice = await signup(client)
    for changes, field in INVALID:
        resp = await client.post("/api/v1/alerts", json=above(**changes), headers=alice["headers"])
        assert resp.status == 422, (changes, await resp.text())
        assert resp.content_type == "application/problem+json"
        problem = await resp.json()
        assert field in [e["field"] for e in problem["errors"]], (changes, problem)
    resp = await client.get("/api/v1/alerts", headers=alice["headers"])
    assert (await resp.json())["total"] == 0


SSRF = [
    "http://127.0.0.1:8080/hook",
    "http://localhost/hook",
    "http://10.0.0.5/hook",
    "http://192.168.0.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://0.0.0.0/hook",
]


async def test_webhooks_to_private_addresses_are_refused(client: Client) -> None:
    alice = await signup(client)
    for url in SSRF:
        body = above(channels=["webhook"], webhook_url=url)
        resp = await client.post("/api/v1/alerts", json=body, headers=alice["headers"])
        assert resp.status == 422, (url, await resp.text())
        assert (await resp.json())["errors"][0]["field"] == "webhook_url"
    public = await create(
        client,
        alice["headers"],
        channels=["email", "webhook"],
        webhook_url="https://93.184.216.34/h",
    )
    assert public["webhook_secret"].startswith("whsec_")
    # The secret is shown once: never again when reading the alert.
    resp = await client.get(f"/api/v1/alerts/{public['id']}", headers=alice["headers"])
    assert "webhook_secret" not in await resp.json()
    resp = await client.patch(
        f"/api/v1/alerts/{public['id']}",
        json={"webhook_url": "http://10.1.1.1/"},
        headers=alice["headers"],
    )
    assert resp.status == 422


async def test_private_webhooks_pass_when_the_setting_allows_them(make_client: MakeClient) -> None:
    client = await alerts_client(make_client, alerts_allow_private_webhooks=True)
    alice = await signup(client)
    created = await create(
        client, alice["headers"], channels=["webhook"], webhook_url="http://127.0.0.1:9/h"
    )
    assert created["webhook_url"] == "http://127.0.0.1:9/h"


async def test_another_users_alert_is_not_found_on_every_route(client: Client) -> None:
    alice, bob = await signup(client), await signup(client)
    mine = await create(client, alice["headers"])
    routes: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", f"/api/v1/alerts/{mine['id']}", None),
        ("PATCH", f"/api/v1/alerts/{mine['id']}", {"note": "mine now"}),
        ("DELETE", f"/api/v1/alerts/{mine['id']}", None),
        ("GET", f"/api/v1/alerts/{mine['id']}/events", None),
    ]
    for method, path, body in routes:
        resp = await client.request(method, path, json=body, headers=bob["headers"])
        assert resp.status == 404, (method, path)
        assert resp.content_type == "application/problem+json"
        resp = await client.request(method, path, json=body)
        assert resp.status == 401, (method, path)
    for bad in ("not-a-uuid", str(uuid.uuid4())):
        resp = await client.get(f"/api/v1/alerts/{bad}", headers=alice["headers"])
        assert resp.status == 404
    resp = await client.get("/api/v1/alerts", headers=bob["headers"])
    assert (await resp.json())["total"] == 0
    assert (await client.get("/api/v1/alerts")).status == 401
    assert (await client.post("/api/v1/alerts", json=above())).status == 401
    # Alice's alert is untouched.
    resp = await client.get(f"/api/v1/alerts/{mine['id']}", headers=alice["headers"])
    assert (await resp.json())["note"] == "take profit"


async def test_api_keys_need_the_alerts_write_scope_to_change_alerts(client: Client) -> None:
    alice = await signup(client)
    resp = await client.post(
        "/api/v1/api-keys", json={"name": "ro", "scopes": ["read"]}, headers=alice["headers"]
    )
    read_only = {"X-API-Key": (await resp.json())["key"]}
    resp = await client.post(
        "/api/v1/api-keys",
        json={"name": "rw", "scopes": ["read", "alerts:write"]},
        headers=alice["headers"],
    )
    writer = {"X-API-Key": (await resp.json())["key"]}
    assert (await client.post("/api/v1/alerts", json=above(), headers=read_only)).status == 403
    created = await create(client, writer)
    path = f"/api/v1/alerts/{created['id']}"
    assert (await client.get(path, headers=read_only)).status == 200
    assert (await client.delete(path, headers=read_only)).status == 403
    assert (await client.delete(path, headers=writer)).status == 204
    assert (await client.get(path, headers=alice["headers"])).status == 404


async def test_patch_pauses_changes_and_validates_the_merged_alert(client: Client) -> None:
    alice = await signup(client)
    created = await create(client, alice["headers"])
    path = f"/api/v1/alerts/{created['id']}"
    resp = await client.patch(
        path, json={"status": "paused", "target_price": "71000.5"}, headers=alice["headers"]
    )
    assert resp.status == 200, await resp.text()
    changed = await resp.json()
    assert (changed["status"], changed["target_price"]) == ("paused", "71000.5")
    assert changed["updated_at"] >= created["updated_at"]
    resp = await client.patch(
        path, json={"condition": "pct_change", "pct": "3"}, headers=alice["headers"]
    )
    assert resp.status == 422
    assert [e["field"] for e in (await resp.json())["errors"]] == ["window_seconds"]
    resp = await client.patch(
        path,
        json={"condition": "pct_change", "pct": "3", "window_seconds": 600},
        headers=alice["headers"],
    )
    assert resp.status == 200
    assert (await resp.json())["target_price"] is None
    resp = await client.patch(path, json={"symbol": None}, headers=alice["headers"])
    assert resp.status == 422
    resp = await client.patch(path, json={"status": "triggered"}, headers=alice["headers"])
    assert resp.status == 422
    resp = await client.patch(
        path,
        json={"channels": ["webhook"], "webhook_url": "https://93.184.216.34/"},
        headers=alice["headers"],
    )
    assert resp.status == 200
    assert (await resp.json())["webhook_secret"].startswith("whsec_")


async def test_list_pages_filters_and_counts(client: Client) -> None:
    alice = await signup(client)
    ids = [
        (await create(client, alice["headers"], target_price=str(70000 + i)))["id"]
        for i in range(5)
    ]
    eth = await create(client, alice["headers"], symbol="eth-usdt", target_price="4000")
    await client.patch(
        f"/api/v1/alerts/{ids[0]}", json={"status": "paused"}, headers=alice["headers"]
    )
    resp = await client.get("/api/v1/alerts?page=1&per_page=2", headers=alice["headers"])
    page1 = await resp.json()
    assert (page1["page"], page1["per_page"], page1["total"]) == (1, 2, 6)
    assert [a["id"] for a in page1["items"]] == [eth["id"], ids[4]]
    resp = await client.get("/api/v1/alerts?page=3&per_page=2", headers=alice["headers"])
    assert [a["id"] for a in (await resp.json())["items"]] == [ids[1], ids[0]]
    resp = await client.get("/api/v1/alerts?page=9&per_page=2", headers=alice["headers"])
    assert (await resp.json())["items"] == []
    resp = await client.get("/api/v1/alerts?symbol=ETH-USDT", headers=alice["headers"])
    assert [a["id"] for a in (await resp.json())["items"]] == [eth["id"]]
    resp = await client.get("/api/v1/alerts?status=paused", headers=alice["headers"])
    assert [a["id"] for a in (await resp.json())["items"]] == [ids[0]]
    resp = await client.get("/api/v1/alerts?status=active&symbol=BTCUSDT", headers=alice["headers"])
    assert (await resp.json())["total"] == 4
    resp = await client.get("/api/v1/alerts?per_page=1000", headers=alice["headers"])
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["field"] == "per_page"


async def test_every_change_invalidates_the_cached_list(client: Client) -> None:
    alice = await signup(client)

    async def listed() -> list[tuple[str, str]]:
        resp = await client.get("/api/v1/alerts", headers=alice["headers"])
        assert resp.status == 200
        return [(a["id"], a["status"]) for a in (await resp.json())["items"]]

    assert await listed() == []
    assert await listed() == []  # now cached
    created = await create(client, alice["headers"])
    assert await listed() == [(created["id"], "active")]
    await listed()
    path = f"/api/v1/alerts/{created['id']}"
    await client.patch(path, json={"status": "paused"}, headers=alice["headers"])
    assert await listed() == [(created["id"], "paused")]
    await client.delete(path, headers=alice["headers"])
    assert await listed() == []


async def test_active_alerts_are_capped_per_user(make_client: MakeClient) -> None:
    client = await alerts_client(make_client, alerts_max_active_per_user=2)
    alice, bob = await signup(client), await signup(client)
    first = await create(client, alice["headers"])
    await create(client, alice["headers"])
    resp = await client.post("/api/v1/alerts", json=above(), headers=alice["headers"])
    assert resp.status == 409
    assert resp.content_type == "application/problem+json"
    await create(client, bob["headers"])  # the cap is per user
    path = f"/api/v1/alerts/{first['id']}"
    assert (await client.patch(path, json={"status": "paused"}, headers=alice["headers"])).ok
    await create(client, alice["headers"])
    resp = await client.patch(path, json={"status": "active"}, headers=alice["headers"])
    assert resp.status == 409


async def test_lists_are_cached_per_user_in_redis(stack: Stack, client: Client) -> None:
    alice = await signup(client)
    await create(client, alice["headers"])
    assert (await client.get("/api/v1/alerts", headers=alice["headers"])).status == 200
    prefix = client.server.app[RUNTIME_SETTINGS].redis_prefix
    redis = Redis.from_url(stack.redis_url)
    try:
        keys = [k.decode() async for k in redis.scan_iter(match=f"{prefix}cache:alerts:*")]
    finally:
        await redis.aclose()
    assert len(keys) == 1


async def test_alerts_work_without_redis(make_client: MakeClient) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    client = await alerts_client(make_client, redis_url=dead)
    alice = await signup(client)
    created = await create(client, alice["headers"])
    for _ in range(2):
        resp = await client.get("/api/v1/alerts", headers=alice["headers"])
        assert resp.status == 200
        assert [a["id"] for a in (await resp.json())["items"]] == [created["id"]]
    path = f"/api/v1/alerts/{created['id']}"
    assert (await client.delete(path, headers=alice["headers"])).status == 204
    resp = await client.get("/api/v1/alerts", headers=alice["headers"])
    assert (await resp.json())["items"] == []
