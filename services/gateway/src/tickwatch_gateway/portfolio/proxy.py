"""Calls to the portfolio service's internal API, each signed for the caller's user.

The gateway has authenticated the user; the portfolio service trusts only a call signed with
the shared ``INTERNAL_API_SECRET`` (:mod:`tickwatch_common.internal_auth`), so the user it acts
for is the one in the token, never one named in a path or a body. The service's answer (status,
body, problem or not) is passed on as it is; a service that cannot be reached answers 503.
"""

from __future__ import annotations

import aiohttp
from pydantic import SecretStr
from tickwatch_common.internal_auth import sign
from yarl import URL

from tickwatch_gateway.http.problems import ProblemError

FORWARDED_HEADERS = ("Idempotency-Key", "Accept")


class PortfolioClient:
    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, secret: SecretStr | None
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.secret = secret

    async def call(
        self,
        method: str,
        path_qs: str,
        user_id: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str, bytes]:
        """(status, content type, body) of the service's answer to a call for ``user_id``."""
        if self.secret is None:
            raise ProblemError(503, "the portfolio is not configured here (INTERNAL_API_SECRET)")
        signed = sign(self.secret, method, path_qs, user_id, body)
        sent = {**(headers or {}), **signed}
        if body:
            sent["Content-Type"] = "application/json"
        try:
            async with self.session.request(
                method, URL(self.base_url + path_qs, encoded=True), data=body or None, headers=sent
            ) as resp:
                return resp.status, resp.content_type, await resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ProblemError(
                503,
                f"the portfolio service cannot be reached: {type(exc).__name__}",
                headers={"Retry-After": "1"},
            ) from None
