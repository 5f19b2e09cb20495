"""``make run`` needs no configuration: it makes each signing key once per machine, strong and
readable by its owner only, and hands it again to the next run (so logins survive a restart);
a gateway of a test gets an ops port of its own."""

from __future__ import annotations

import stat
from pathlib import Path

from tickwatch_common.secret_strength import weakness
from tickwatch_devstack.services import with_gateway_ops_port
from tickwatch_devstack.supervisor import _kept_secret


def test_a_kept_secret_is_strong_owner_only_and_the_same_next_run(tmp_path: Path) -> None:
    data = tmp_path / ".data"
    first = _kept_secret(data, "jwt_secret")
    assert weakness(first) is None
    assert stat.S_IMODE((data / "jwt_secret").stat().st_mode) == 0o600
    assert _kept_secret(data, "jwt_secret") == first
    assert _kept_secret(data, "internal_api_secret") != first


def test_a_gateway_gets_a_free_ops_port_unless_one_is_named() -> None:
    given = with_gateway_ops_port(("gateway",), {})
    assert int(given["GATEWAY_OPS_PORT"]) > 0
    assert with_gateway_ops_port(("gateway",), {"GATEWAY_OPS_PORT": "9999"}) == {
        "GATEWAY_OPS_PORT": "9999"
    }
    assert with_gateway_ops_port(("portfolio",), {}) == {}
