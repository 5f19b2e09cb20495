"""Users, logins and API keys: registration, JWT access and rotating refresh tokens, login
revocation, API keys with scopes, and admission (who is calling, what they may do)."""

from tickwatch_gateway.accounts.admission import (
    PRINCIPAL,
    Principal,
    admit,
    require,
    require_ops,
    verify_access,
)
from tickwatch_gateway.accounts.keys import SESSIONS
from tickwatch_gateway.accounts.session_watch import SessionWatch, Watched
from tickwatch_gateway.accounts.wiring import install_accounts, register_accounts

__all__ = [
    "PRINCIPAL",
    "SESSIONS",
    "Principal",
    "SessionWatch",
    "Watched",
    "admit",
    "install_accounts",
    "register_accounts",
    "require",
    "require_ops",
    "verify_access",
]
