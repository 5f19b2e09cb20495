"""The authenticated bus, against an Apache Kafka broker of its own that takes only SASL/SCRAM
logins and denies what no ACL allows, with the ACLs of the prod overlay's kafka-acls.sh (both
from tickwatch_common.bus_access): each service writes only its own topics and reads what it
consumes; a forged trigger is refused; a wrong password fails at once, naming the setting; and
the shipped script, run by sh, adds exactly these rules, as Apache Kafka's kafka-acls reads it."""

from __future__ import annotations

import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import certifi
import pytest
from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError
from tickwatch_common.bus_access import SCRIPT_PATH, AclBinding, acl_bindings, principal
from tickwatch_common.events import Trigger, TriggerChannel
from tickwatch_common.kafka import (
    KafkaCertificateRefused,
    KafkaLoginRefused,
    ensure_topics,
    kafka_consumer,
    kafka_producer,
)
from tickwatch_common.kafka_acls import create_acls
from tickwatch_common.settings import KafkaSettings
from tickwatch_common.topics import (
    ALERT_CHANGES,
    ALERTS_TRIGGERED,
    CANDLES,
    NOTIFICATIONS_DLQ,
    NOTIFICATIONS_STATUS,
    TICKS,
)
from tickwatch_devstack.infra import BrokerSecurity, free_port, kafka_tool, start_kafka

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[4]
SERVICES = ("init", "gateway", "alert-engine", "notifier")


@dataclass(frozen=True)
class SecureBus:
    bootstrap: str  # SASL_PLAINTEXT
    tls_port: int  # SASL_SSL, a certificate for localhost signed by ca_file
    ca_file: Path
    passwords: dict[str, str]  # user -> password

    def settings(self, user: str, password: str | None = None) -> KafkaSettings:
        return KafkaSettings(
            kafka_bootstrap_servers=self.bootstrap,
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username=user,
            kafka_sasl_password=self.passwords[user] if password is None else password,
        )

    def service(self, name: str) -> KafkaSettings:
        return self.settings(principal(name))

    def over_tls(self, name: str, *, host: str = "localhost", ca_file: str = "") -> KafkaSettings:
        return self.service(name).model_copy(
            update={
                "kafka_bootstrap_servers": f"{host}:{self.tls_port}",
                "kafka_security_protocol": "SASL_SSL",
                "kafka_ssl_cafile": ca_file or str(self.ca_file),
            }
        )


def make_certificates(directory: Path) -> tuple[Path, Path]:
    """A throw-away CA and, signed by it, the broker's key and certificate for ``localhost``
    only (openssl, about 0.2 s): (the CA's PEM, the broker's key + certificate PEM)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
        "-keyout", "ca.key", "-out", "ca.pem",
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", "broker.key", "-out", "broker.csr",
    )  # fmt: skip
    (directory / "broker.ext").write_text(
        "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    openssl(
        "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-extfile", "broker.ext", "-out", "broker.pem",
    )  # fmt: skip
    keystore = directory / "broker-keystore.pem"
    keystore.write_text(
        (directory / "broker.key").read_text() + (directory / "broker.pem").read_text()
    )
    return directory / "ca.pem", keystore


@pytest.fixture(scope="module")
def secure_broker() -> Iterator[SecureBus]:
    """One broker for the module, SCRAM on a plain and on a TLS listener; its start (format
    with the SCRAM users, JVM) is reported."""
    users = {"admin": secrets.token_urlsafe(24)}
    users |= {principal(s): secrets.token_urlsafe(24) for s in SERVICES}
    data_dir = Path(tempfile.mkdtemp(prefix="tickwatch-kafka-auth-"))
    ca_file, keystore = make_certificates(data_dir)
    security = BrokerSecurity(users, tls_port=free_port(), keystore_pem=keystore)
    server = start_kafka(data_dir, free_port(), security=security)
    print(f"\nSASL/SCRAM broker started in {server.started_s:.1f} s")
    try:
        assert security.tls_port is not None
        yield SecureBus(f"localhost:{server.port}", security.tls_port, ca_file, users)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
async def bus(secure_broker: SecureBus) -> AsyncIterator[SecureBus]:
    """The access map's ACLs added as admin; every topic made by the init principal."""
    started = time.monotonic()
    added = await create_acls(secure_broker.settings("admin"), acl_bindings())
    assert added == len(acl_bindings())
    await ensure_topics(secure_broker.service("init"))
    print(f"{added} ACLs and the topics in {time.monotonic() - started:.1f} s")
    yield secure_broker


def trigger(alert_id: str) -> Trigger:
    """Schema-valid, as a forger would write it: mail to anyone."""
    return Trigger(
        event_id=uuid.uuid4().hex,
        alert_id=alert_id,
        user_id="u-1",
        sequence=1,
        symbol="BTC-USDT",
        condition="above",
        threshold=Decimal("1"),
        price=Decimal("2"),
        ts_event=1_700_000_000_000,
        triggered_at=1_700_000_000_000,
        channels=[TriggerChannel(type="email", to="victim@example.com")],
    )


async def test_the_alert_engine_writes_triggers_and_the_notifiers_group_reads_them(
    bus: SecureBus,
) -> None:
    alert_id = uuid.uuid4().hex
    # The engine's producer as its composition root makes it (the start-up check included).
    async with kafka_producer(
        bus.service("alert-engine"), topics=[ALERTS_TRIGGERED, TICKS, ALERT_CHANGES]
    ) as engine:
        await engine.publish(ALERTS_TRIGGERED, trigger(alert_id), key=alert_id)
    group = f"notifier-{uuid.uuid4().hex[:8]}"  # under the notifier's group prefix
    async with kafka_consumer(
        bus.service("notifier"), group=group, topics=[ALERTS_TRIGGERED]
    ) as consumer:
        seen: list[str] = []
        deadline = time.monotonic() + 20
        while alert_id not in seen and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                seen += [r.key.decode() for r in records if r.key is not None]
        assert alert_id in seen
        await consumer.commit()  # the group's offsets are its own to commit


@pytest.mark.parametrize("service", ["notifier", "gateway"])
async def test_a_trigger_forged_by_another_service_is_refused(bus: SecureBus, service: str) -> None:
    # Each starts as its composition root has it (the notifier: with its start-up topic check).
    topics = {
        "notifier": [NOTIFICATIONS_STATUS, NOTIFICATIONS_DLQ, ALERTS_TRIGGERED],
        "gateway": [CANDLES, ALERT_CHANGES, ALERTS_TRIGGERED, NOTIFICATIONS_STATUS],
    }[service]
    async with kafka_producer(bus.service(service), topics=topics) as publisher:
        with pytest.raises(TopicAuthorizationFailedError):
            await publisher.publish(ALERTS_TRIGGERED, trigger("forged"), key="forged")


async def test_the_notifier_can_neither_plant_an_alert_nor_join_another_group(
    bus: SecureBus,
) -> None:
    async with kafka_producer(bus.service("notifier")) as publisher:
        with pytest.raises(TopicAuthorizationFailedError):
            await publisher.publish(ALERT_CHANGES, None, key="planted")
    with pytest.raises(GroupAuthorizationFailedError):
        async with kafka_consumer(
            bus.service("notifier"), group="alert-engine", topics=[ALERTS_TRIGGERED]
        ) as consumer:
            await consumer.getmany(timeout_ms=2000)


async def test_a_wrong_password_is_refused_at_start_naming_the_setting(bus: SecureBus) -> None:
    wrong = bus.settings(principal("notifier"), password="not-" + bus.passwords["admin"])
    started = time.monotonic()
    with pytest.raises(KafkaLoginRefused, match="KAFKA_SASL_USERNAME=tickwatch-notifier") as exc:
        async with kafka_producer(wrong):
            pass
    assert time.monotonic() - started < 10, "refused at once, not retried for a minute"
    assert "KAFKA_SASL_PASSWORD" in str(exc.value)
    assert wrong.kafka_sasl_password.get_secret_value() not in str(exc.value)
    with pytest.raises(KafkaLoginRefused):  # a consumer too
        async with kafka_consumer(wrong, group=None, topics=[ALERTS_TRIGGERED]):
            pass


def script_commands(tmp_path: Path) -> list[list[str]]:
    """The shipped kafka-acls.sh, run by sh with a stand-in for the tool that records each
    command's arguments."""
    record = tmp_path / "commands"
    stand_in = tmp_path / "kafka-acls"
    stand_in.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {shlex.quote(str(record))}\n')
    stand_in.chmod(0o755)
    env = {
        "KAFKA_BOOTSTRAP": "b:1",
        "KAFKA_ADMIN_CONFIG": "a.properties",
        "KAFKA_ACLS": str(stand_in),
    }
    subprocess.run(
        ["sh", str(ROOT / SCRIPT_PATH)], env={"PATH": "/usr/bin:/bin", **env}, check=True
    )
    return [line.split() for line in record.read_text().splitlines()]


def parsed(words: list[str]) -> set[AclBinding]:
    """The rules one kafka-acls command adds (it takes several --operation)."""
    assert words[:5] == ["--bootstrap-server", "b:1", "--command-config", "a.properties", "--add"]
    flags = list(zip(words[5::2], words[6::2], strict=True))
    user = next(v for f, v in flags if f == "--allow-principal")
    kind, name = next((f, v) for f, v in flags if f in ("--topic", "--group"))
    pattern = next(v for f, v in flags if f == "--resource-pattern-type").upper()
    return {
        AclBinding(user, kind[2:].title(), name, pattern, op)
        for f, op in flags
        if f == "--operation"
    }


def upper_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


async def test_the_shipped_script_adds_exactly_these_rules_as_kafkas_own_tool_reads_them(
    bus: SecureBus, tmp_path: Path
) -> None:
    commands = script_commands(tmp_path)
    assert set().union(*(parsed(c) for c in commands)) == set(acl_bindings())
    admin = tmp_path / "admin.properties"
    admin.write_text(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required"
        f' username="admin" password="{bus.passwords["admin"]}";\n'
    )
    connect = ["--bootstrap-server", bus.bootstrap, "--command-config", str(admin)]
    # The script's longest command through kafka-acls itself (adding a rule again is a no-op),
    # then the tool's own listing: the rules the test gave by protocol code, by Kafka's names.
    longest = max(commands, key=len)
    started = time.monotonic()
    added = kafka_tool("kafka.admin.AclCommand", *connect, *longest[4:])
    assert added.returncode == 0, added.stdout[-2000:] + added.stderr[-2000:]
    listed = kafka_tool("kafka.admin.AclCommand", *connect, "--list")
    assert listed.returncode == 0, listed.stdout[-2000:] + listed.stderr[-2000:]
    print(f"kafka-acls twice in {time.monotonic() - started:.1f} s")
    found, resource = set(), None
    for line in listed.stdout.splitlines():
        if m := re.search(r"resourceType=(\w+), name=([^,]+), patternType=(\w+)", line):
            resource = m.groups()
        elif m := re.search(
            r"principal=([^,]+), host=\*, operation=(\w+), permissionType=ALLOW", line
        ):
            assert resource is not None
            found.add((m[1], *resource, m[2]))
    expected = {
        (b.principal, b.resource.upper(), b.name, b.pattern, upper_snake(b.operation))
        for b in acl_bindings()
    }
    assert found == expected


async def test_over_tls_the_brokers_certificate_is_verified_and_the_login_is_the_same(
    bus: SecureBus,
) -> None:
    alert_id = uuid.uuid4().hex
    async with kafka_producer(bus.over_tls("alert-engine")) as engine:
        await engine.publish(ALERTS_TRIGGERED, trigger(alert_id), key=alert_id)
    async with kafka_producer(bus.over_tls("notifier")) as forger:  # the ACLs hold over TLS too
        with pytest.raises(TopicAuthorizationFailedError):
            await forger.publish(ALERTS_TRIGGERED, trigger("forged"), key="forged")


@pytest.mark.parametrize(
    "wrong",
    [
        {"ca_file": certifi.where()},  # the public CAs: not the one that signed the broker
        {"host": "127.0.0.1"},  # the certificate names localhost only
    ],
    ids=["another-ca", "another-host-name"],
)
async def test_a_certificate_that_does_not_verify_stops_the_start_at_once(
    bus: SecureBus, wrong: dict[str, str]
) -> None:
    started = time.monotonic()
    with pytest.raises(KafkaCertificateRefused, match="KAFKA_SSL_CAFILE"):
        async with kafka_producer(bus.over_tls("alert-engine", **wrong)):
            pass
    assert time.monotonic() - started < 10, "refused at once, not retried for a minute"
