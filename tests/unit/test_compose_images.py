"""Every image docker-compose.yml pulls is pinned to an exact version: ``latest`` or a bare name
moves under the stack between two runs, and a major-only tag (``postgres:16``) does too. And the
file is secure by default: only the API and the mail page on the host, every secret required."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from tickwatch_common.secret_strength import SHIPPED_DEFAULTS

ROOT = Path(__file__).resolve().parents[2]
# A tag naming a release down to its minor version at least (3.9.1, 16.6, v1.21.8).
EXACT = re.compile(r"^v?\d+\.\d+(\.\d+)*([.-][A-Za-z0-9.-]+)?$")


def images() -> dict[str, str]:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return {
        name: service["image"]
        for name, service in compose["services"].items()
        if "image" in service
    }


def unpinned(image: str) -> bool:
    _, _, last = image.rpartition("/")
    _, colon, tag = last.partition(":")
    return not colon or not EXACT.match(tag)


def test_every_image_is_pinned_to_an_exact_version() -> None:
    found = images()
    assert found, "docker-compose.yml names no image"
    assert {name: image for name, image in found.items() if unpinned(image)} == {}


def test_latest_a_bare_name_and_a_major_only_tag_are_unpinned() -> None:
    assert unpinned("axllent/mailpit:latest")
    assert unpinned("redis")
    assert unpinned("postgres:16")
    assert unpinned("localhost:5000/redis")
    assert not unpinned("localhost:5000/redis:7.4.2")
    assert not unpinned("apache/kafka:3.9.1")


# ---------------------------------------------------------------------------- secure by default
# Issue 13 item 5: what docker-compose.yml publishes on the host, and that it ships no secret.

PUBLISHED = {"gateway": ["8080:8080"], "mailpit": ["8025:8025"]}
REQUIRED_SECRETS = {"JWT_SECRET", "INTERNAL_API_SECRET", "POSTGRES_PASSWORD", "REDIS_PASSWORD"}
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASS\b|_KEY\b|TOKEN")
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def compose_text() -> str:
    return (ROOT / "docker-compose.yml").read_text()


def interpolations(text: str) -> list[tuple[str, str, str]]:
    """(name, operator, its default or message) of every ``${...}`` (``$${`` is a literal)."""
    return [m.groups("") for m in INTERPOLATION.finditer(text.replace("$$", ""))]


def test_only_the_api_and_the_mail_page_are_published_on_the_host() -> None:
    compose: dict[str, Any] = yaml.safe_load(compose_text())
    published = {n: s["ports"] for n, s in compose["services"].items() if s.get("ports")}
    assert published == PUBLISHED


def test_every_secret_is_required_and_none_has_a_default() -> None:
    found = interpolations(compose_text())
    required = {name for name, op, message in found if op == ":?" and message.strip()}
    assert required >= REQUIRED_SECRETS
    for name, op, default in found:
        if SECRET_NAME.search(name):
            # Required (":?"), or optional and empty when unset (SENDGRID_API_KEY: SMTP then).
            assert op == ":?" or (op in (":-", "") and default == ""), f"{name} has a default"


def test_no_password_or_secret_is_written_in_the_file() -> None:
    text = compose_text()
    assert not [d for d in SHIPPED_DEFAULTS if d in text]
    compose: dict[str, Any] = yaml.safe_load(text)
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        for var, value in env.items():
            if SECRET_NAME.search(var):
                assert str(value).startswith("${"), f"{name}: {var} is written in the file"
    gateway = compose["services"]["gateway"]["environment"]
    assert "${POSTGRES_PASSWORD:?" in gateway["DATABASE_URL"]
    assert gateway["REDIS_URL"].startswith("redis://:${REDIS_PASSWORD:?")
    assert "${REDIS_PASSWORD:?" in " ".join(compose["services"]["redis"]["command"])


def test_the_interpolation_reader_tells_a_default_from_a_requirement() -> None:
    assert interpolations("a: ${A:-x} b: ${B:?set B} c: ${C} d: $${D}") == [
        ("A", ":-", "x"),
        ("B", ":?", "set B"),
        ("C", "", ""),
    ]
