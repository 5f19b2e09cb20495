"""Every image docker-compose.yml pulls is pinned to an exact version: ``latest`` or a bare name
moves under the stack between two runs, and a major-only tag (``postgres:16``) does too."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

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
