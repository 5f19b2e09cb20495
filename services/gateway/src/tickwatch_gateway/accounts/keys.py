"""The typed keys of the accounts feature."""

from __future__ import annotations

from aiohttp import web

from tickwatch_gateway.accounts.revocation import LoginRevocations
from tickwatch_gateway.accounts.session_watch import SessionWatch
from tickwatch_gateway.accounts.settings import AccountSettings
from tickwatch_gateway.accounts.store import AccountStore
from tickwatch_gateway.accounts.tokens import TokenIssuer

ACCOUNT_SETTINGS = web.AppKey("account_settings", AccountSettings)
TOKENS = web.AppKey("tokens", TokenIssuer)
ACCOUNTS = web.AppKey("accounts", AccountStore)
REVOCATIONS = web.AppKey("revocations", LoginRevocations)
SESSIONS = web.AppKey("sessions", SessionWatch)
