"""The PostgreSQL adapter for users, refresh-token families and API keys.

A refresh-token family is one login; its id is the ``sid`` of the login's access tokens, and
revoking the family (logout, reuse detection) is what revokes them
(:mod:`tickwatch_gateway.revocation`).
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from tickwatch_gateway.accounts.tokens import digest, new_api_key, opaque_token


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
    """The refresh token is unknown, expired, revoked, or was used before (reuse); on reuse,
    ``revoked_login`` is the login (family) revoked for it."""

    def __init__(self, reason: str, revoked_login: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.revoked_login = revoked_login


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
    def __init__(
        self, pool: asyncpg.Pool, refresh_ttl_s: int, key_touch_interval_s: float = 60
    ) -> None:
        self.pool = pool
        self.refresh_ttl = timedelta(seconds=refresh_ttl_s)
        self.key_touch_interval_s = float(key_touch_interval_s)
        self._touching: set[str] = set()  # API keys whose last_used_at is being written here

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

    async def start_login(self, user_id: str) -> tuple[str, str]:
        """A new login: (its first refresh token, its id)."""
        family = uuid.uuid4()
        return await self.issue_refresh(user_id, family), str(family)

    async def issue_refresh(
        self, user_id: str, family_id: uuid.UUID, conn: asyncpg.Connection | None = None
    ) -> str:
        token = opaque_token()
        await (conn or self.pool).execute(
            "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at)"
            " VALUES ($1, $2, $3, $4, now() + $5::interval)",
            uuid.uuid4(),
            uuid.UUID(user_id),
            family_id,
            digest(token),
            self.refresh_ttl,
        )
        return token

    async def rotate_refresh(self, token: str) -> tuple[str, str, str]:
        """Use ``token`` once: (user id, its successor, the login's id). A second use revokes
        the family."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE refresh_tokens SET used_at = now()"
                " WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL"
                " AND expires_at > now() RETURNING user_id, family_id",
                digest(token),
            )
            if row is not None:
                successor = await self.issue_refresh(str(row["user_id"]), row["family_id"], conn)
                return str(row["user_id"]), successor, str(row["family_id"])
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
            raise RefreshRejected(
                "refresh token reused; every token of this login is revoked",
                str(seen["family_id"]),
            )
        raise RefreshRejected("refresh token expired")

    async def login_of(self, user_id: str, token: str) -> str | None:
        """The login (family) of the user's refresh token ``token``; None if it is not theirs."""
        family = await self.pool.fetchval(
            "SELECT family_id FROM refresh_tokens WHERE token_hash = $1 AND user_id = $2",
            digest(token),
            uuid.UUID(user_id),
        )
        return None if family is None else str(family)

    async def revoke_logins(self, user_id: str, logins: list[str]) -> None:
        await self.pool.execute(
            "UPDATE refresh_tokens SET revoked_at = now()"
            " WHERE user_id = $1 AND family_id = ANY($2::uuid[]) AND revoked_at IS NULL",
            uuid.UUID(user_id),
            [uuid.UUID(login) for login in logins],
        )

    async def revoke_all(self, user_id: str) -> list[str]:
        """Revoke every login of the user; returns those that were still live."""
        rows = await self.pool.fetch(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL"
            " RETURNING family_id",
            uuid.UUID(user_id),
        )
        return sorted({str(r["family_id"]) for r in rows})

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
        """The live key ``key``, its use recorded: ``last_used_at`` is written at most once per
        ``key_touch_interval_s`` per key, and trails the key's last use by at most that.

        The row read to authenticate the key says whether its stored ``last_used_at`` is older
        than the interval (by the database's clock), which is the memo: shared by every
        replica and exact, unlike a per-process one, which could hold back a write while the
        stored value ages past the interval. Only then is the conditional UPDATE sent (one per
        key at a time from this process), and its condition lets only the first of several
        replicas racing on the same key write."""
        row = await self.pool.fetchrow(
            "SELECT *, last_used_at IS NULL"
            " OR last_used_at < now() - make_interval(secs => $2) AS touch_due"
            " FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
            digest(key),
            self.key_touch_interval_s,
        )
        if row is None:
            return None
        found = _key(row)
        if row["touch_due"] and found.id not in self._touching:
            self._touching.add(found.id)
            try:
                touched = await self.pool.fetchval(
                    "UPDATE api_keys SET last_used_at = now() WHERE id = $1"
                    " AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => $2))"
                    " RETURNING last_used_at",
                    uuid.UUID(found.id),
                    self.key_touch_interval_s,
                )
            finally:
                self._touching.discard(found.id)
            if touched is not None:
                found = dataclasses.replace(found, last_used_at=touched)
        return found
