"""Every setting a service reads is listed in the README's table and in .env.example."""

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


def setting_names() -> set[str]:
    names: set[str] = set()
    for module_name in SETTINGS_MODULES:
        module = importlib.import_module(module_name)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseSettings):
                names.update((f.alias or n).upper() for n, f in value.model_fields.items())
    return names


@pytest.mark.parametrize("document", ["README.md", ".env.example"])
def test_every_setting_is_documented(document: str) -> None:
    text = (ROOT / document).read_text()
    missing = sorted(n for n in setting_names() if not re.search(rf"\b{n}\b", text))
    assert not missing, f"{document} does not mention: {', '.join(missing)}"
