"""The gateway's packages depend one way, and features meet only at each other's face.

``runtime`` ← ``http`` ← ``accounts`` ← ``market`` ← ``analytics``, ``alerts`` (``dashboard`` needs only the
edge); the composition root (``app``, ``settings``, ``__main__``) imports everything and nothing
imports it. A feature reaches another only through its package (``tickwatch_gateway.market``),
never a module inside it, so a feature's insides can change without touching its neighbours.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import tickwatch_gateway

ROOT = Path(tickwatch_gateway.__file__).parent
LAYERS = ["runtime", "http", "accounts", "market", "analytics", "alerts", "portfolio", "dashboard"]
FEATURES = {"accounts", "market", "analytics", "alerts", "portfolio", "dashboard"}
# What each package may import besides itself (dashboard sits beside the features, on the edge).
ALLOWED = {
    "runtime": set(),
    "http": {"runtime"},
    "accounts": {"runtime", "http"},
    "market": {"runtime", "http", "accounts"},
    "analytics": {"runtime", "http", "market"},
    "alerts": {"runtime", "http", "accounts", "market"},
    "portfolio": {"runtime", "http", "accounts", "market"},
    "dashboard": {"runtime", "http"},
}


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return [name for name in found if name.split(".")[0] == "tickwatch_gateway"]


def package_modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", LAYERS)
def test_a_package_imports_only_the_layers_below_it(package: str) -> None:
    wrong = []
    for path in package_modules(package):
        for name in imports_of(path):
            parts = name.split(".")
            target = parts[1] if len(parts) > 1 else ""
            if target == package:
                continue
            if target not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong


@pytest.mark.parametrize("package", LAYERS)
def test_a_feature_is_reached_only_through_its_face(package: str) -> None:
    wrong = []
    for path in package_modules(package):
        for name in imports_of(path):
            parts = name.split(".")
            if len(parts) > 2 and parts[1] in FEATURES and parts[1] != package:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong


def test_every_module_lives_in_a_package_but_the_composition_root() -> None:
    top = {p.name for p in ROOT.glob("*.py")}
    assert top == {"__init__.py", "__main__.py", "app.py", "settings.py"}
    assert {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == set(
        LAYERS
    )
