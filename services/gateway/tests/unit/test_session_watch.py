"""Which sockets of a login must end: the pure rule of the session watch."""

from __future__ import annotations

from tickwatch_gateway.accounts.session_watch import Watched, due


async def _end(reason: str) -> None:
    return None


def test_a_revoked_login_ends_all_its_sockets_and_an_expired_token_its_own() -> None:
    a1, a2 = Watched("login-a", 2_000, _end), Watched("login-a", 2_000, _end)
    b = Watched("login-b", 1_000, _end)
    c = Watched("login-c", 5_000, _end)
    assert due([a1, a2, b, c], revoked={"login-a"}, now_s=1_500) == [
        (a1, "login revoked"),
        (a2, "login revoked"),
        (b, "access token expired"),
    ]


def test_an_ended_socket_is_not_ended_twice_and_a_token_without_login_still_expires() -> None:
    done = Watched("login-a", 0, _end, ended=True)
    legacy = Watched(None, 10, _end)  # tokens issued before logins had ids
    assert due([done, legacy], revoked={"login-a"}, now_s=10) == [(legacy, "access token expired")]
