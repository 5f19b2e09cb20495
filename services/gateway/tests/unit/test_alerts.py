"""The alert rules, the webhook target check as the gateway uses it and the note's placeholder
rule at the body models, with plain data (the address rules themselves:
libs/common/tests/unit/test_ssrf.py; the placeholders: test_note_template.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from tickwatch_common.ssrf import check_webhook_target
from tickwatch_gateway.alerts.domain import (
    MAX_URL_LENGTH,
    AlertInvalid,
    AlertSpec,
    apply_patch,
    check_rules,
    effective_status,
    patch_needs_future_expiry,
)
from tickwatch_gateway.alerts.routes import AlertCreate, AlertPatch, alert_body_problem

NOW = 1_800_000_000_000
KNOWN = {"BTCUSDT": "BTC-USDT", "ETHUSDT": "ETH-USDT"}


def known(raw: str) -> str | None:
    return KNOWN.get(raw.upper().replace("-", ""))


def fields(spec: AlertSpec) -> list[str]:
    with pytest.raises(AlertInvalid) as caught:
        check_rules(spec, known_symbol=known, now_ms=NOW)
    return [e.field for e in caught.value.errors]


def above(**changes: object) -> AlertSpec:
    values: dict[str, object] = {
        "symbol": "BTC-USDT",
        "condition": "above",
        "target_price": Decimal("70000"),
    }
    values.update(changes)
    return AlertSpec(**values)  # type: ignore[arg-type]


def test_a_valid_alert_gets_its_canonical_symbol() -> None:
    spec = check_rules(above(symbol="btcusdt"), known_symbol=known, now_ms=NOW)
    assert spec.symbol == "BTC-USDT"


def test_each_broken_rule_names_its_field() -> None:
    assert fields(above(symbol="DOGE-XYZ")) == ["symbol"]
    assert fields(above(target_price=None)) == ["target_price"]
    assert fields(above(target_price=Decimal(0))) == ["target_price"]
    assert fields(above(target_price=Decimal(-1))) == ["target_price"]
    assert fields(above(pct=Decimal(5))) == ["pct"]
    assert fields(above(window_seconds=60)) == ["window_seconds"]
    assert fields(above(cooldown_seconds=-1)) == ["cooldown_seconds"]
    assert fields(above(channels=())) == ["channels"]
    assert fields(above(channels=("email", "email"))) == ["channels"]
    assert fields(above(channels=("webhook",))) == ["webhook_url"]
    assert fields(above(webhook_url="https://93.184.216.34/")) == ["webhook_url"]
    assert fields(above(channels=("webhook",), webhook_url="ftp://x/")) == ["webhook_url"]
    assert fields(above(expires_at_ms=NOW - 1)) == ["expires_at"]


def test_pct_change_needs_a_percentage_and_a_window_instead_of_a_target() -> None:
    pct = above(condition="pct_change", target_price=None, pct=Decimal(5), window_seconds=3600)
    assert check_rules(pct, known_symbol=known, now_ms=NOW).pct == Decimal(5)
    assert fields(above(condition="pct_change")) == ["target_price", "pct", "window_seconds"]
    assert fields(AlertSpec("BTC-USDT", "pct_change", pct=Decimal(0), window_seconds=0)) == [
        "pct",
        "window_seconds",
    ]


def test_a_past_expiry_is_allowed_when_not_checked_or_not_active() -> None:
    spec = above(expires_at_ms=NOW - 1)
    assert check_rules(spec, known_symbol=known, now_ms=NOW, check_expiry=False)
    assert check_rules(
        above(expires_at_ms=NOW - 1, status="paused"), known_symbol=known, now_ms=NOW
    )


def test_effective_status_expires_active_and_paused_alerts() -> None:
    assert effective_status("active", NOW - 1, NOW) == "expired"
    assert effective_status("paused", NOW, NOW) == "expired"
    assert effective_status("active", NOW + 1, NOW) == "active"
    assert effective_status("triggered", NOW - 1, NOW) == "triggered"
    assert effective_status("active", None, NOW) == "active"


async def resolver(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str) -> list[str]:
        if host not in table:
            raise OSError("no such host")
        return table[host]

    return resolve


async def test_webhook_hosts_are_resolved_and_every_address_must_be_public() -> None:
    resolve = await resolver(
        {
            "hooks.example.com": ["93.184.216.34"],
            "rebind.example.com": ["93.184.216.34", "10.0.0.1"],
            "metadata.example.com": ["169.254.169.254"],
        }
    )

    async def check(url: str, allow: bool = False) -> str | None:
        return await check_webhook_target(
            url, allow_private=allow, resolve=resolve, max_length=MAX_URL_LENGTH
        )

    assert await check("https://hooks.example.com/x") is None
    assert await check("http://93.184.216.34:8080/x") is None
    assert "private" in (await check("https://rebind.example.com/x") or "")
    assert "private" in (await check("https://metadata.example.com/") or "")
    assert "private" in (await check("http://127.0.0.1:9000/") or "")
    assert "private" in (await check("http://[::1]/") or "")
    assert "private" in (await check("http://localhost/") or "")
    assert "private" in (await check("http://a.localhost/") or "")
    assert "resolve" in (await check("https://nowhere.example.com/") or "")
    assert "http" in (await check("file:///etc/passwd") or "")
    assert "credentials" in (await check("https://u:p@hooks.example.com/") or "")
    # The setting for development lets private addresses through, never other schemes.
    assert await check("http://127.0.0.1:9000/", allow=True) is None
    assert await check("gopher://127.0.0.1/", allow=True) is not None


# ---------------------------------------------------------------- the PATCH merge

PRICE = AlertSpec(
    symbol="BTC-USDT",
    condition="above",
    target_price=Decimal("70000"),
    channels=("email", "webhook"),
    webhook_url="https://hooks.example.com/x",
)


def test_a_patch_changes_only_what_it_gives() -> None:
    merged = apply_patch(PRICE, {"note": "hi", "cooldown_seconds": 60})
    assert merged == AlertSpec(**{**PRICE.__dict__, "note": "hi", "cooldown_seconds": 60})


def test_switching_to_pct_change_drops_the_target_and_back_drops_pct_and_window() -> None:
    pct = apply_patch(PRICE, {"condition": "pct_change", "pct": Decimal(5), "window_seconds": 60})
    assert (pct.target_price, pct.pct, pct.window_seconds) == (None, Decimal(5), 60)
    back = apply_patch(pct, {"condition": "below", "target_price": Decimal(1)})
    assert (back.target_price, back.pct, back.window_seconds) == (Decimal(1), None, None)


def test_dropping_the_webhook_channel_drops_its_url_unless_the_patch_sets_one() -> None:
    assert apply_patch(PRICE, {"channels": ("email",)}).webhook_url is None
    kept = apply_patch(PRICE, {"channels": ("email",), "webhook_url": "https://a.example/"})
    assert kept.webhook_url == "https://a.example/"  # check_rules then names the field


def test_only_a_new_expiry_or_a_reactivation_must_lie_in_the_future() -> None:
    assert patch_needs_future_expiry(PRICE, {"expires_at_ms"})
    assert patch_needs_future_expiry(PRICE, {"status"})
    assert not patch_needs_future_expiry(PRICE, {"note"})
    paused = apply_patch(PRICE, {"status": "paused"})
    assert not patch_needs_future_expiry(paused, {"status", "expires_at_ms"})


# ------------------------------------------------------------ the note's placeholders


def _note_refusal(model: type[BaseModel], body: Mapping[str, object]) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    [error] = alert_body_problem(caught.value).extensions["errors"]
    return dict(error)


PRICE_BODY = {"symbol": "BTC-USDT", "condition": "above", "target_price": "70000"}


@pytest.mark.parametrize("note", ["at {{ prix }}", "{{ price.__class__ }}", "{{{{", "{{price"])
def test_a_note_with_an_unknown_or_malformed_placeholder_is_refused_at_note(note: str) -> None:
    for model, body in ((AlertCreate, {**PRICE_BODY, "note": note}), (AlertPatch, {"note": note})):
        error = _note_refusal(model, body)
        assert error["field"] == "note", error
        assert "{{symbol}}, {{price}}, {{condition}}, {{threshold}}, {{time}}" in error["message"]


def test_a_note_with_known_placeholders_is_kept_as_written() -> None:
    note = "take profit: {{symbol}} at {{ price }} {{time}} {{rsi}} {single}"
    created = AlertCreate.model_validate({**PRICE_BODY, "note": note}).root
    assert created.note == note
    assert AlertPatch.model_validate({"note": note}).note == note
    description = AlertPatch.model_json_schema()["properties"]["note"]["description"]
    assert "{{symbol}}" in description and "{{alert_id}}" in description


@given(st.text(alphabet="{} pricesymbolt_\n\x00", max_size=30))
def test_the_notes_schema_pattern_accepts_what_the_gateway_accepts(note: str) -> None:
    """A fuzzer reading the OpenAPI document (``re.search``) agrees with the validator."""
    pattern = AlertPatch.model_json_schema()["properties"]["note"]["anyOf"][0]["pattern"]
    try:
        AlertPatch.model_validate({"note": note})
        accepted = True
    except ValidationError:
        accepted = False
    assert bool(re.search(pattern, note)) == accepted
