"""The Kafka security settings turned into every client's connection options, and the
access map turned into ACLs: plain data, no broker."""

from __future__ import annotations

import ast
import ssl
from pathlib import Path

import certifi
import pytest
from tickwatch_common.bus_access import ACCESS, SCRIPT_PATH, acl_bindings, acl_script, principal
from tickwatch_common.kafka import client_options
from tickwatch_common.settings import KafkaSettings, load_settings
from tickwatch_common.topics import ALERT_CHANGES, ALERTS_TRIGGERED, ALL_TOPICS, all_topic_specs

ROOT = Path(__file__).resolve().parents[4]


@pytest.fixture(autouse=True)
def no_kafka_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")  # no .env here
    for name in (
        "KAFKA_SECURITY_PROTOCOL",
        "KAFKA_SASL_MECHANISM",
        "KAFKA_SASL_USERNAME",
        "KAFKA_SASL_PASSWORD",
        "KAFKA_SSL_CAFILE",
        "KAFKA_SSL_CERTFILE",
        "KAFKA_SSL_KEYFILE",
    ):
        monkeypatch.delenv(name, raising=False)


def test_the_default_is_todays_plaintext() -> None:
    options = client_options(KafkaSettings(kafka_bootstrap_servers="k:9092"))
    assert options == {"bootstrap_servers": "k:9092", "security_protocol": "PLAINTEXT"}
    assert client_options("k:9092") == {"bootstrap_servers": "k:9092"}


def test_sasl_ssl_logs_in_with_scram_and_verifies_the_brokers_certificate_and_name() -> None:
    settings = KafkaSettings(
        kafka_bootstrap_servers="k:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="tickwatch-gateway",
        kafka_sasl_password="s3cret-value",
        kafka_ssl_cafile=certifi.where(),
    )
    options = client_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "tickwatch-gateway"
    assert options["sasl_plain_password"] == "s3cret-value"
    context: ssl.SSLContext = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.cert_store_stats()["x509_ca"] > 0  # the CA file was loaded
    assert "s3cret-value" not in repr(settings) and "s3cret-value" not in str(settings)


def test_sasl_plaintext_has_no_tls_and_ssl_no_login() -> None:
    sasl = client_options(
        KafkaSettings(
            kafka_bootstrap_servers="k:1",
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="SCRAM-SHA-256",
            kafka_sasl_username="u",
            kafka_sasl_password="p",
        )
    )
    assert sasl["sasl_mechanism"] == "SCRAM-SHA-256" and "ssl_context" not in sasl
    tls = client_options(
        KafkaSettings(kafka_bootstrap_servers="k:1", kafka_security_protocol="SSL")
    )
    assert "ssl_context" in tls and "sasl_mechanism" not in tls


def test_sasl_without_its_principal_stops_the_start_naming_the_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k:9093")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "tickwatch-notifier")
    with pytest.raises(SystemExit) as exc:
        load_settings(KafkaSettings)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_PASSWORD" in err
    monkeypatch.delenv("KAFKA_SASL_USERNAME")
    with pytest.raises(SystemExit):
        load_settings(KafkaSettings)
    assert "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD" in capsys.readouterr().err


def test_an_unknown_protocol_or_mechanism_is_refused(monkeypatch, capsys) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k:9093")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SCRAM")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "PLAIN")
    with pytest.raises(SystemExit):
        load_settings(KafkaSettings)
    err = capsys.readouterr().err
    assert "KAFKA_SECURITY_PROTOCOL" in err and "KAFKA_SASL_MECHANISM" in err


def test_the_prod_acl_script_is_the_generators_output() -> None:
    shipped = (ROOT / SCRIPT_PATH).read_text()
    assert shipped == acl_script(), (
        f"{SCRIPT_PATH} is stale: python -m tickwatch_common.bus_access > {SCRIPT_PATH}"
    )


def writers(topic: str) -> set[str]:
    return {b.principal for b in acl_bindings() if b.name == topic and b.operation == "Write"}


def test_triggers_and_alert_changes_each_have_one_writer() -> None:
    assert writers(ALERTS_TRIGGERED.name) == {f"User:{principal('alert-engine')}"}
    assert writers(ALERT_CHANGES.name) == {f"User:{principal('gateway')}"}
    for topic in ALL_TOPICS:  # every contract topic has exactly one writing service
        assert len(writers(topic.name)) == 1, topic.name


def test_the_map_names_only_contract_topics_and_dlqs_and_a_reader_only_what_is_written() -> None:
    known = {name for name, _, _ in all_topic_specs()}
    written = {t for a in ACCESS.values() for t in a.produces}
    for service, rights in ACCESS.items():
        for topic in (*rights.produces, *rights.consumes, *rights.ensures, *rights.creates):
            assert topic in known, f"{service}: {topic}"
        assert set(rights.consumes) <= written, f"{service} reads a topic nobody writes"
        assert set(rights.creates) <= set(rights.ensures), service
    assert set(ACCESS["init"].creates) == known, "the init Job makes every topic"


def test_no_service_may_change_a_topic_it_does_not_own() -> None:
    for b in acl_bindings():
        if b.operation in ("Create", "Alter", "AlterConfigs") and not b.name.endswith(".dlq"):
            service = b.principal.removeprefix("User:tickwatch-")
            assert service == "init" or b.name in ACCESS[service].produces, b


CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "AIOKafkaClient"}


def test_every_kafka_client_in_the_code_connects_through_client_options() -> None:
    """A client made with a bare ``bootstrap_servers=`` would skip the login in production."""
    sources = [
        *(ROOT / "libs").glob("*/src/**/*.py"),
        *(ROOT / "services").glob("*/src/**/*.py"),
    ]
    made = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in CLIENTS:
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                made.append(where)
                assert all(k.arg != "bootstrap_servers" for k in node.keywords), where
                assert any(k.arg is None for k in node.keywords), f"{where}: no **options"
    assert len(made) >= 8, made  # producer, consumer, admin in tickwatch_common.kafka and more
