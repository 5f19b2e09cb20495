"""Every setting a service reads is listed in the README's table and in .env.example, and each
service's own README lists every field of that service's ``Settings``."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_MODULES = [
    "tickwatch_ingestor.settings",
    "tickwatch_gateway.settings",
    "tickwatch_alert_engine.settings",
    "tickwatch_notifier.settings",
    "tickwatch_portfolio.settings",
]

# Service folder -> the module holding its ``Settings``: its README must name every field.
SERVICE_SETTINGS = {
    "ingestor": "tickwatch_ingestor.settings",
    "alert-engine": "tickwatch_alert_engine.settings",
    "notifier": "tickwatch_notifier.settings",
    "portfolio": "tickwatch_portfolio.settings",
    "gateway": "tickwatch_gateway.settings",
}


def env_names(settings: type[BaseSettings]) -> set[str]:
    return {(f.alias or n).upper() for n, f in settings.model_fields.items()}


def setting_names() -> set[str]:
    names: set[str] = set()
    for module_name in SETTINGS_MODULES:
        module = importlib.import_module(module_name)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseSettings):
                names.update(env_names(value))
    return names


def missing_from(text: str, names: set[str]) -> list[str]:
    return sorted(n for n in names if not re.search(rf"\b{n}\b", text))


@pytest.mark.parametrize("document", ["README.md", ".env.example"])
def test_every_setting_is_documented(document: str) -> None:
    text = (ROOT / document).read_text()
    missing = missing_from(text, setting_names())
    assert not missing, f"{document} does not mention: {', '.join(missing)}"


@pytest.mark.parametrize("service", sorted(SERVICE_SETTINGS))
def test_a_services_readme_lists_every_field_of_its_settings(service: str) -> None:
    settings = importlib.import_module(SERVICE_SETTINGS[service]).Settings
    readme = ROOT / "services" / service / "README.md"
    missing = missing_from(readme.read_text(), env_names(settings))
    assert not missing, f"{readme.relative_to(ROOT)} does not list: {', '.join(missing)}"
