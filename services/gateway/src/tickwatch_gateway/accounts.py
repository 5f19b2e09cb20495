"""The PostgreSQL adapter for users, refresh-token families and API keys."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from tickwatch_gateway.tokens import digest, new_api_key, opaque_token


@dataclass(frozen=True)
class User:
    id: str
    email: str
    name: str | None
    created_at: datetime


@dataclass(frozen=True)
class ApiKey:
    id: str
    user_id: str
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None


class EmailTaken(Exception):
    pass


class RefreshRejected(Exception):
    """The refresh token is unknown, expired, revoked, or was used before (reuse)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _user(row: asyncpg.Record) -> User:
    return User(str(row["id"]), row["email"], row["name"], row["created_at"])


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        str(row["id"]),
        str(row["user_id"]),
        row["name"],
        row["prefix"],
        tuple(row["scopes"]),
        row["created_at"],
        row["last_used_at"],
    )


class AccountStore:
    def __init__(self, pool: asyncpg.Pool, refresh_ttl_s: int) -> None:
        self.pool = pool
        self.refresh_ttl = timedelta(seconds=refresh_ttl_s)

    # ------------------------------------------------------------ users

    async def create_user(self, email: str, name: str | None, password_hash: str) -> User:
        try:
            row = await self.pool.fetchrow(
                "INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, $3, $4)"
                " RETURNING *",
                uuid.uuid4(),
                email,
                name,
                password_hash,
            )
        except asyncpg.UniqueViolationError:
            raise EmailTaken(email) from None
        assert row is not None
        return _user(row)

    async def credentials(self, email: str) -> tuple[User, str] | None:
        row = await self.pool.fetchrow("SELECT * FROM users WHERE lower(email) = lower($1)", email)
        return None if row is None else (_user(row), row["password_hash"])

    async def user(self, user_id: str) -> User | None:
        row = await self.pool.fetchrow("SELECT * FROM users WHERE id = $1", uuid.UUID(user_id))
        return None if row is None else _user(row)

    # ------------------------------------------------------------ refresh tokens

    async def issue_refresh(
        self,
        user_id: str,
        family_id: uuid.UUID | None = None,
        conn: asyncpg.Connection | None = None,
    ) -> str:
        token = opaque_token()
        await (conn or self.pool).execute(
            "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at)"
            " VALUES ($1, $2, $3, $4, now() + $5::interval)",
            uuid.uuid4(),
            uuid.UUID(user_id),
            family_id or uuid.uuid4(),
            digest(token),
            self.refresh_ttl,
        )
        return token

    async def rotate_refresh(self, token: str) -> tuple[str, str]:
        """Use ``token`` once: (user id, its successor). A second use revokes the family."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE refresh_tokens SET used_at = now()"
                " WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL"
                " AND expires_at > now() RETURNING user_id, family_id",
                digest(token),
            )
            if row is not None:
                successor = await self.issue_refresh(str(row["user_id"]), row["family_id"], conn)
                return str(row["user_id"]), successor
        seen = await self.pool.fetchrow(
            "SELECT family_id, used_at, revoked_at, expires_at > now() AS live"
            " FROM refresh_tokens WHERE token_hash = $1",
            digest(token),
        )
        if seen is None:
            raise RefreshRejected("unknown refresh token")
        if seen["used_at"] is not None or seen["revoked_at"] is not None:
            await self.pool.execute(
                "UPDATE refresh_tokens SET revoked_at = now()"
                " WHERE family_id = $1 AND revoked_at IS NULL",
                seen["family_id"],
            )
            raise RefreshRejected("refresh token reused; every token of this login is revoked")
        raise RefreshRejected("refresh token expired")

    async def revoke_family_of(self, user_id: str, token: str) -> bool:
        status = await self.pool.execute(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE revoked_at IS NULL AND family_id ="
            " (SELECT family_id FROM refresh_tokens WHERE token_hash = $1 AND user_id = $2)",
            digest(token),
            uuid.UUID(user_id),
        )
        return bool(status != "UPDATE 0")

    async def revoke_all(self, user_id: str) -> None:
        await self.pool.execute(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
            uuid.UUID(user_id),
        )

    # ------------------------------------------------------------ API keys

    async def create_api_key(
        self, user_id: str, name: str, scopes: list[str]
    ) -> tuple[ApiKey, str]:
        key, prefix = new_api_key()
        row = await self.pool.fetchrow(
            "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, scopes)"
            " VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
            uuid.uuid4(),
            uuid.UUID(user_id),
            name,
            prefix,
            digest(key),
            scopes,
        )
        assert row is not None
        return _key(row), key

    async def api_keys(self, user_id: str) -> list[ApiKey]:
        rows = await self.pool.fetch(
            "SELECT * FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at",
            uuid.UUID(user_id),
        )
        return [_key(r) for r in rows]

    async def revoke_api_key(self, user_id: str, key_id: str) -> bool:
        try:
            kid = uuid.UUID(key_id)
        except ValueError:
            return False
        status = await self.pool.execute(
            "UPDATE api_keys SET revoked_at = now()"
            " WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
            kid,
            uuid.UUID(user_id),
        )
        return bool(status != "UPDATE 0")

    async def api_key(self, key: str) -> ApiKey | None:
        row = await self.pool.fetchrow(
            "UPDATE api_keys SET last_used_at = now()"
            " WHERE key_hash = $1 AND revoked_at IS NULL RETURNING *",
            digest(key),
        )
        return None if row is None else _key(row)
