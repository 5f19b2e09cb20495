"""The seed's pure parts: the demo data covers what the API offers, bodies follow the current
price, keys are stable, and ``make run`` lifts the webhook guard only on a loopback API."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from tickwatch_devstack.seed import (
    DEMO_USERS,
    DemoAlert,
    Order,
    alert_body,
    already_placed,
    order_body,
    price_at,
    step_keys,
)
from tickwatch_devstack.supervisor import loopback_webhook_allowance

NOW = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)
ALLOW = ("ALERTS_ALLOW_PRIVATE_WEBHOOKS", "NOTIFIER_ALLOW_PRIVATE_WEBHOOKS")


def test_the_demo_data_offers_every_condition_frequency_expiry_and_a_webhook() -> None:
    alerts = [a for user in DEMO_USERS for a in user.alerts]
    assert {a.condition for a in alerts} == {
        "above",
        "below",
        "crosses_up",
        "crosses_down",
        "pct_change",
    }
    assert {a.frequency for a in alerts} == {"once", "recurring"}
    assert any(a.expires_in_days for a in alerts) and any(a.webhook for a in alerts)
    keys = [(user.email, a.key) for user in DEMO_USERS for a in user.alerts]
    assert len(keys) == len(set(keys))  # each marker names one alert of its user


def test_targets_follow_the_price_to_its_step() -> None:
    assert price_at(Decimal("86419.61"), "0.1") == Decimal("86506.03")
    assert price_at(Decimal("2.0506"), "-1") == Decimal("2.0301")
    hook = DemoAlert("k", "SOL-USDT", "crosses_up", "note", offset_pct="1", webhook=True)
    body = alert_body(hook, Decimal("100"), NOW, "http://127.0.0.1:8025/webhooks/demo")
    assert body["target_price"] == "101.00" and body["note"] == "note [seed:k]"
    assert body["channels"] == ["email", "webhook"]
    pct = DemoAlert("p", "SOL-USDT", "pct_change", "n", pct="0.3", window_seconds=600)
    body = alert_body(pct, Decimal("100"), NOW, None)
    assert "target_price" not in body and body["pct"] == "0.3"
    expiring = DemoAlert("e", "BTC-USDT", "above", "n", offset_pct="10", expires_in_days=7)
    assert alert_body(expiring, Decimal("1"), NOW, None)["expires_at"] == "2026-12-11T18:00:00Z"


def test_orders_keys_and_the_ledger_match() -> None:
    limit = Order("l", "BTC-USDT", "buy", "0.01", limit_offset_pct="-3")
    assert order_body(limit, Decimal("100")) == {
        "symbol": "BTC-USDT",
        "side": "buy",
        "quantity": "0.01",
        "type": "limit",
        "limit_price": "97.00",
    }
    user = DEMO_USERS[0]
    keys = step_keys(user, limit)
    assert keys == step_keys(user, limit) and len(set(keys)) == len(keys)
    placed = {"symbol": "BTC-USDT", "side": "buy", "type": "limit", "quantity": "0.0100"}
    assert already_placed(limit, [{**placed, "status": "open"}])
    assert not already_placed(limit, [{**placed, "status": "rejected"}])
    assert not already_placed(limit, [{**placed, "type": "market", "status": "filled"}])


def test_private_webhooks_are_allowed_only_while_the_api_listens_on_loopback() -> None:
    assert loopback_webhook_allowance({}) == {"GATEWAY_HOST": "127.0.0.1"} | dict.fromkeys(
        ALLOW, "true"
    )
    assert loopback_webhook_allowance({"GATEWAY_HOST": "0.0.0.0"}) == {}
    assert loopback_webhook_allowance({"GATEWAY_HOST": "::1"}) == dict.fromkeys(ALLOW, "true")
    # What someone set themselves stays as they set it.
    assert loopback_webhook_allowance({ALLOW[0]: "false"}) == {"GATEWAY_HOST": "127.0.0.1"}
