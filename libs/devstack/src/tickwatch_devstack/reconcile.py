"""``python -m tickwatch_devstack reconcile``: ask the gateway to rebuild ``alerts.changes.v1``.

The gateway owns the alert tables, so the work is its own: this only calls its
``POST /ops/reconcile`` over HTTP (devstack never imports a service) with an operator token, an
HS256 JWT of ``typ: "ops"`` signed with the gateway's ``JWT_SECRET``, living one minute. The
secret comes from the environment or ``.env``, else from ``.data/jwt_secret`` where ``make run``
keeps the one it generated. The signature is written out here (a few lines of the standard
library) so devstack needs no JWT package.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from tickwatch_devstack.supervisor import load_environment

OPS_TOKEN_TTL_S = 60
TIMEOUT_S = 120  # above the gateway's RECONCILE_TIMEOUT_S default: its answer, not ours, wins


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ops_token(secret: str, issuer: str, audience: str, now: float | None = None) -> str:
    """An HS256 JWT the gateway admits on its ops routes (``TokenIssuer.verify_ops``)."""
    iat = int(time.time() if now is None else now)
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": "ops",
        "iat": iat,
        "exp": iat + OPS_TOKEN_TTL_S,
        "typ": "ops",
    }
    signing_input = ".".join(
        _b64(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def reconcile(repo: Path, data: Path | None = None, url: str | None = None) -> int:
    """Call the gateway and print its counts; exit code 0 when it reconciled, 1 otherwise."""
    _, seen = load_environment(repo)
    secret = seen.get("JWT_SECRET")
    secret_file = (data or repo / ".data") / "jwt_secret"
    if not secret and secret_file.exists():
        secret = secret_file.read_text().strip()
    if not secret:
        print("devstack reconcile: no JWT_SECRET (environment, .env or .data/jwt_secret)")
        return 2
    base = url or f"http://127.0.0.1:{seen.get('GATEWAY_PORT') or 8080}"
    token = ops_token(
        secret,
        seen.get("JWT_ISSUER") or "tickwatch",
        seen.get("JWT_AUDIENCE") or "tickwatch-api",
    )
    request = urllib.request.Request(
        f"{base}/ops/reconcile",
        method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        print(f"devstack reconcile: the gateway answered {exc.code}: {detail}")
        return 1
    except OSError as exc:
        print(f"devstack reconcile: cannot reach the gateway at {base}: {exc}")
        return 1
    print(
        "devstack reconcile: {checked} alerts checked against {on_topic} on the topic,"
        " {republished} republished, {tombstoned} tombstoned"
        " ({unknown} unknown to the gateway, {ahead} ahead of it) in {seconds} s".format(**body)
    )
    return 0
