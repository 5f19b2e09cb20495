"""An API key's last use is recorded at most once a minute, and the list shows it to the minute."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from .conftest import signup

Client = TestClient[Any, Any]


async def listed_last_use(client: Client, user: dict[str, Any]) -> str | None:
    resp = await client.get("/api/v1/api-keys", headers=user["headers"])
    [key] = (await resp.json())["items"]
    return key["last_used_at"]  # type: ignore[no-any-return]


async def test_last_use_is_written_once_a_minute_and_listed(
    client: Client, fresh_database: str
) -> None:
    user = await signup(client)
    resp = await client.post("/api/v1/api-keys", json={"name": "bot"}, headers=user["headers"])
    created = await resp.json()
    key = {"X-API-Key": created["key"]}
    assert await listed_last_use(client, user) is None

    db = await asyncpg.connect(fresh_database, server_settings={"search_path": "gateway"})
    try:

        async def row() -> tuple[int, datetime]:
            found = await db.fetchrow(
                "SELECT xmin::text::bigint AS version, last_used_at FROM api_keys WHERE id = $1",
                created["id"],
            )
            assert found is not None
            return found["version"], found["last_used_at"]

        assert (await client.get("/api/v1/auth/me", headers=key)).status == 200
        version, first_use = await row()
        assert datetime.now(UTC) - first_use < timedelta(seconds=10)
        assert await listed_last_use(client, user) is not None

        # A burst within the minute: every request authenticated, not one write.
        statuses = await asyncio.gather(
            *(client.get("/api/v1/auth/me", headers=key) for _ in range(20))
        )
        assert {r.status for r in statuses} == {200}
        assert await row() == (version, first_use)

        # A minute later (the stored value aged by hand), the next use is written, once.
        await db.execute(
            "UPDATE api_keys SET last_used_at = last_used_at - interval '61 seconds' WHERE id = $1",
            created["id"],
        )
        aged_version, aged = await row()
        for _ in range(3):
            assert (await client.get("/api/v1/auth/me", headers=key)).status == 200
        version, latest = await row()
        assert latest > aged + timedelta(seconds=60)
        assert version != aged_version
        assert (await client.get("/api/v1/auth/me", headers=key)).status == 200
        assert await row() == (version, latest)
        listed = datetime.fromisoformat((await listed_last_use(client, user) or "").rstrip("Z"))
        assert abs(listed.replace(tzinfo=UTC) - latest) < timedelta(milliseconds=1)

        # A revoked key is refused at once (the check is not memoised).
        await client.delete(f"/api/v1/api-keys/{created['id']}", headers=user["headers"])
        assert (await client.get("/api/v1/auth/me", headers=key)).status == 401
    finally:
        await db.close()
