"""Each delivery attempt's outcome is one log line: alert, trigger, channel, outcome, attempt,
send duration and where it went (an e-mail's domain, a webhook's host), never the mailbox or a
webhook's secret, path or credentials."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import pytest
import structlog
from prometheus_client import REGISTRY
from structlog.testing import capture_logs
from tickwatch_common.events import Trigger, TriggerChannel
from tickwatch_notifier import dispatcher as dispatcher_module
from tickwatch_notifier.channels import SENT, Outcome
from tickwatch_notifier.deliveries import Claim
from tickwatch_notifier.dispatcher import Dispatcher, Limits, recipient_of

SECRET = "whsec-never-logged"
WEBHOOK = f"https://hooks.example.org/t/{SECRET}?sig={SECRET}"


class OneClaimLog:
    """A delivery log that hands out one claim of ``trigger`` at ``attempt`` and keeps what it
    is told of the outcome."""

    def __init__(self, trigger: Trigger, attempt: int) -> None:
        self.claim_of: Claim | None = Claim(attempt, trigger)
        self.outcomes: list[str] = []

    async def claim(self, event_id: str, channel: str, lease_s: float) -> Claim | None:
        claim, self.claim_of = self.claim_of, None
        return claim

    async def finish(self, event_id: str, channel: str, status: str, detail: str) -> None:
        self.outcomes.append(status)

    async def retry_later(self, event_id: str, channel: str, delay: float, detail: str) -> None:
        self.outcomes.append("retrying")

    async def mark_published(self, event_id: str, channel: str, status: str) -> None:
        pass


class Discard:
    async def publish(self, topic: Any, event: Any, *, key: str) -> None:
        pass


class Answers:
    """A channel answering every send with ``outcome``."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome

    def destination(self, channel: TriggerChannel) -> str:
        return "test"

    async def send(self, trigger: Trigger, channel: TriggerChannel) -> Outcome:
        return self.outcome


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[MutableMapping[str, Any]]]:
    # A fresh proxy: the module's own may be cached against a configuration made before.
    monkeypatch.setattr(dispatcher_module, "log", structlog.get_logger(dispatcher_module.__name__))
    with capture_logs() as captured:
        yield captured


async def deliver(trigger: Trigger, name: str, outcome: Outcome, attempt: int = 1) -> list[str]:
    log = OneClaimLog(trigger, attempt)
    dispatcher = Dispatcher(
        log,
        Discard(),
        {name: Answers(outcome)},
        Limits(max_attempts=3),
    )
    await asyncio.wait_for(dispatcher._deliver(trigger, name), 30)
    return log.outcomes


async def test_a_sent_email_logs_one_line_with_the_domain_not_the_address(
    email_trigger: Callable[[str, str], Trigger], lines: list[MutableMapping[str, Any]]
) -> None:
    trigger = email_trigger("ev-1", "Bob.Smith@Example.COM")
    assert await deliver(trigger, "email", SENT) == ["sent"]
    [line] = [line for line in lines if line["event"].startswith("delivery_")]
    assert line["duration_ms"] >= 0
    assert {k: v for k, v in line.items() if k != "duration_ms"} == {
        "event": "delivery_sent",
        "log_level": "info",
        "alert_id": "a-ev-1",
        "event_id": "ev-1",
        "channel": "email",
        "outcome": "sent",
        "attempt": 1,
        "recipient": "example.com",
    }
    assert "bob.smith" not in repr(lines).lower()


async def test_a_webhook_retried_then_failed_logs_its_host_never_its_secret(
    email_trigger: Callable[[str, str], Trigger], lines: list[MutableMapping[str, Any]]
) -> None:
    trigger = email_trigger("ev-2", "x@example.com").model_copy(
        update={"channels": [TriggerChannel(type="webhook", url=WEBHOOK, secret=SECRET)]}
    )
    busy = Outcome("transient", "HTTP 503: busy")
    assert await deliver(trigger, "webhook", busy, attempt=1) == ["retrying"]
    assert await deliver(trigger, "webhook", busy, attempt=3) == ["failed"]
    found = [line for line in lines if line["event"].startswith("delivery_")]
    assert [
        (line["event"], line["outcome"], line["attempt"], line["recipient"], line["detail"])
        for line in found
    ] == [
        ("delivery_retrying", "retrying", 1, "hooks.example.org", "HTTP 503: busy"),
        ("delivery_failed", "failed", 3, "hooks.example.org", "HTTP 503: busy"),
    ]
    assert found[0]["retry_in_s"] > 0
    assert SECRET not in repr(lines)


def test_the_recipient_is_a_domain_or_a_host_and_nothing_more() -> None:
    assert recipient_of(TriggerChannel(type="email", to="a@b.example")) == "b.example"
    hook = TriggerChannel(type="webhook", url="https://user:pw@Hook.example:8443/p?q=s")
    assert recipient_of(hook) == "hook.example"
    assert recipient_of(TriggerChannel(type="webhook", url="http://[::1")) is None
    assert recipient_of(None) is None


def _late(channel: str) -> tuple[float, float]:
    """The count and sum of the trigger-to-sent histogram of ``channel`` so far."""
    labels = {"channel": channel}
    count = REGISTRY.get_sample_value("notifier_trigger_to_sent_seconds_count", labels)
    total = REGISTRY.get_sample_value("notifier_trigger_to_sent_seconds_sum", labels)
    return count or 0.0, total or 0.0


async def test_a_send_recorded_as_sent_observes_how_late_after_the_trigger_it_went(
    email_trigger: Callable[[str, str], Trigger],
) -> None:
    triggered_at = int((time.time() - 2) * 1000)
    trigger = email_trigger("ev-3", "x@example.com").model_copy(
        update={"triggered_at": triggered_at}
    )
    count, total = _late("email")
    assert await deliver(trigger, "email", Outcome("transient", "busy")) == ["retrying"]
    assert _late("email") == (count, total)  # only a send that went counts
    assert await deliver(trigger, "email", SENT, attempt=2) == ["sent"]
    after_count, after_total = _late("email")
    assert after_count == count + 1
    assert 2 <= after_total - total < 30
