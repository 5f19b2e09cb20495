"""The chaos run's pure parts with plain data: its plan, its oracle of the alert semantics, and
the verdict's rules on losses and duplicates."""

from __future__ import annotations

from decimal import Decimal

from tickwatch_devstack.chaos.oracle import Firing, Oracle, WatchedAlert
from tickwatch_devstack.chaos.plan import HIGH, LONG, LOW, SHORT, level
from tickwatch_devstack.chaos.receivers import parse_mail
from tickwatch_devstack.chaos.tally import (
    Delivery,
    Outcome,
    TriggerRecord,
    count_channel,
    count_triggers,
    failures,
    render,
)


def alert(alert_id: str = "a", threshold: str = "150", cooldown_s: int = 10) -> WatchedAlert:
    return WatchedAlert(alert_id, "CHAOS0-USDT", Decimal(threshold), cooldown_s)


def test_the_same_seed_gives_the_same_faults_and_another_seed_another_order() -> None:
    assert LONG.faults(9) == LONG.faults(9)
    assert [f.label for f in LONG.faults(9)] != [f.label for f in LONG.faults(10)]
    kinds = [f.kind for f in SHORT.faults(9)]
    assert sorted(set(kinds)) == ["broker", "kill", "postgres", "redis", "smtp"]


def test_the_long_plan_watches_2000_thresholds_of_recurring_alerts() -> None:
    assert LONG.alerts == 2000
    assert LONG.alerts_per_symbol * LONG.symbols / LONG.users <= 100  # the gateway's cap
    assert all(LOW < LONG.threshold(j) < HIGH for j in range(LONG.alerts_per_symbol))
    assert LONG.cooldown_s < LONG.period_s / 2 and SHORT.cooldown_s < SHORT.period_s / 2


def test_each_swing_has_its_own_high_price() -> None:
    prices = [level(10.0, 1.0, t / 2) for t in range(0, 60)]
    highs = sorted({p for p in prices if p > LOW})
    assert prices[0] == LOW and highs == [HIGH + Decimal("0.0001") * k for k in range(1, 4)]


def test_a_crossing_fires_once_per_swing_and_not_on_repeated_highs() -> None:
    oracle = Oracle([alert()])
    assert oracle.on_tick("CHAOS0-USDT", Decimal(100), 1_000) == []
    assert oracle.on_tick("CHAOS0-USDT", Decimal("200.0001"), 20_000) == [
        Firing("a", Decimal("200.0001"))
    ]
    assert oracle.on_tick("CHAOS0-USDT", Decimal("200.0001"), 20_500) == []  # a resent copy
    assert oracle.on_tick("CHAOS0-USDT", Decimal(100), 25_000) == []
    assert oracle.on_tick("CHAOS0-USDT", Decimal("200.0002"), 40_000) != []
    assert oracle.per_alert == {"a": 2}


def test_a_crossing_within_the_cooldown_does_not_fire_and_time_never_goes_back() -> None:
    oracle = Oracle([alert(cooldown_s=10)])
    oracle.on_tick("CHAOS0-USDT", Decimal(100), 1_000)
    assert oracle.on_tick("CHAOS0-USDT", Decimal(200), 2_000)
    oracle.on_tick("CHAOS0-USDT", Decimal(100), 3_000)
    assert oracle.on_tick("CHAOS0-USDT", Decimal("200.1"), 11_999) == []
    oracle.on_tick("CHAOS0-USDT", Decimal(100), 1)  # an old timestamp: the clock stays at 11,999
    assert oracle.on_tick("CHAOS0-USDT", Decimal("200.2"), 12_000) != []


def delivery(channel: str, price: str, ident: str = "m1", event_id: str = "e1") -> Delivery:
    return Delivery(channel, "a", Decimal(price), event_id, ident)  # type: ignore[arg-type]


def test_a_duplicate_is_allowed_once_for_a_send_in_flight_at_a_kill_with_the_same_id() -> None:
    owed = [Firing("a", Decimal(200)), Firing("a", Decimal(201))]
    sent = [delivery("email", "200"), delivery("email", "200"), delivery("email", "201", "m2")]
    allowed = count_channel("email", owed, sent, {("e1", "email")})
    assert not allowed.lost and [d.allowed for d in allowed.duplicates] == [True]
    beyond = count_channel("email", owed, sent, set())
    assert [d.allowed for d in beyond.duplicates] == [False]
    renamed = count_channel(
        "email", owed, [*sent[:1], delivery("email", "200", "other"), sent[2]], {("e1", "email")}
    )
    assert [(d.same_id, d.allowed) for d in renamed.duplicates] == [(False, False)]


def test_losses_and_strays_are_named_per_channel_and_for_triggers() -> None:
    owed = [Firing("a", Decimal(200)), Firing("a", Decimal(201))]
    hooks = count_channel("webhook", owed, [delivery("webhook", "202")], set())
    assert hooks.lost == owed and hooks.unexpected == [Firing("a", Decimal(202))]
    triggers = count_triggers(
        owed,
        [
            TriggerRecord("e1", "a", 1, Decimal(200)),
            TriggerRecord("e1", "a", 1, Decimal(200)),  # on the wire twice: fine
            TriggerRecord("e9", "a", 2, Decimal(200)),  # fired again under a new id: not fine
        ],
    )
    assert triggers.lost == [Firing("a", Decimal(201))]
    assert triggers.renamed == [Firing("a", Decimal(200))] and triggers.records == 3


def test_the_verdict_passes_only_a_clean_run_and_prints_its_figures() -> None:
    owed = [Firing("a", Decimal(200))]
    clean = Outcome(
        "short", 9, triggers=count_triggers(owed, [TriggerRecord("e1", "a", 1, Decimal(200))])
    )
    clean.channels = [
        count_channel("email", owed, [delivery("email", "200")], set()),
        count_channel("webhook", owed, [delivery("webhook", "200")], set()),
    ]
    assert failures(clean) == [] and "PASS" in render(clean)
    clean.dlq = {"notifications.dlq.v1": 1}
    assert failures(clean) == ["1 dead-lettered records"] and "FAIL" in render(clean)


def test_an_email_names_its_alert_price_and_ids() -> None:
    raw = (
        b"Message-ID: <e1.email@tickwatch>\r\nX-Tickwatch-Event-Id: e1\r\n"
        b"X-Tickwatch-Alert-Id: a\r\nContent-Type: text/plain\r\n\r\n"
        b"CHAOS0-USDT crossed up through 110.\r\nPrice: 200.0003\r\n"
    )
    assert parse_mail(raw) == Delivery(
        "email", "a", Decimal("200.0003"), "e1", "<e1.email@tickwatch>"
    )
    assert parse_mail(b"Subject: nothing\r\n\r\nno price") is None
