"""Settings stop the service naming what is missing; readiness tells critical from degraded."""

from __future__ import annotations

import pytest
from tickwatch_common.backoff import Backoff
from tickwatch_common.ops import Check, CheckResult, readiness
from tickwatch_common.settings import KafkaSettings, PostgresSettings, load_settings


class Both(KafkaSettings, PostgresSettings):
    pass


def test_missing_settings_stop_the_process_naming_each(monkeypatch, capsys) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir("/")  # no .env here
    with pytest.raises(SystemExit) as exc:
        load_settings(Both)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "missing required setting KAFKA_BOOTSTRAP_SERVERS" in err
    assert "missing required setting DATABASE_URL" in err


def test_settings_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k:9092")
    monkeypatch.setenv("DATABASE_URL", "postgresql://x/y")
    monkeypatch.setenv("KAFKA_ENABLE_IDEMPOTENCE", "true")
    settings = load_settings(Both)
    assert settings.kafka_bootstrap_servers == "k:9092"
    assert settings.kafka_enable_idempotence is True


async def test_ready_is_503_when_a_critical_dependency_fails() -> None:
    async def ok() -> bool:
        return True

    async def boom() -> CheckResult:
        raise ConnectionError("refused")

    code, body = await readiness([Check("kafka", ok), Check("postgres", boom)])
    assert code == 503
    assert body["status"] == "not_ready"
    assert "refused" in body["checks"]["postgres"]["detail"]  # type: ignore[index]


async def test_ready_is_degraded_but_200_when_only_a_non_critical_one_fails() -> None:
    async def ok() -> bool:
        return True

    async def down() -> bool:
        return False

    code, body = await readiness([Check("kafka", ok), Check("redis", down, critical=False)])
    assert (code, body["status"]) == (200, "degraded")


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    backoff = Backoff(initial_s=0.1, cap_s=1.0)
    delays = [backoff.next_delay() for _ in range(10)]
    assert all(0.05 <= d <= 1.0 for d in delays)
    assert delays[-1] >= 0.5
    backoff.reset()
    assert backoff.next_delay() <= 0.1


def test_retry_after_is_read_in_seconds_or_falls_back() -> None:
    from tickwatch_common.backoff import retry_after_seconds

    assert retry_after_seconds({"Retry-After": "7"}, 1.0) == 7.0
    assert retry_after_seconds({"Retry-After": "-3"}, 1.0) == 0.0
    assert retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 1.0) == 1.0
    assert retry_after_seconds({}, None) is None
    assert retry_after_seconds(None, 2.0) == 2.0
