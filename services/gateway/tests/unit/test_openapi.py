"""The OpenAPI document is generated from the declared routes and their models."""

from __future__ import annotations

import re

from tickwatch_gateway.app import build_api
from tickwatch_gateway.http.openapi import docs_page


def test_every_operation_is_documented_with_its_models() -> None:
    api = build_api()
    doc = api.document("Tickwatch", "test")
    assert doc["openapi"] == "3.1.0"
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    declared = {(op.method, api.prefix + op.path) for op in api.operations}
    assert documented == declared
    price = doc["paths"]["/api/v1/prices/{symbol}"]["get"]
    assert price["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Price"
    }
    assert set(doc["components"]["schemas"]["Price"]["properties"]) == {
        "symbol",
        "price",
        "source",
        "ts",
        "change_24h_pct",
        "volume_24h",
    }
    schemas = doc["components"]["schemas"]
    assert {"sources", "price", "ts", "source_prices", "spread"} <= set(
        schemas["Market"]["properties"]
    )
    assert set(schemas["SourcePrice"]["required"]) == {"source", "price", "ts", "age_s", "fresh"}
    assert {"absolute", "pct"} <= set(schemas["MarketSpread"]["properties"])
    for path in ("/api/v1/prices/{symbol}", "/api/v1/prices/{symbol}/history"):
        (source,) = [p for p in doc["paths"][path]["get"]["parameters"] if p["name"] == "source"]
        assert source["schema"]["anyOf"][0]["enum"] == [
            "binance",
            "coingecko",
            "coinbase",
            "replay",
        ]
    register = doc["paths"]["/api/v1/auth/register"]["post"]
    assert {"413", "415", "422", "429"} <= set(register["responses"])
    assert doc["paths"]["/api/v1/api-keys"]["post"]["security"] == [{"bearerAuth": []}]


def test_the_docs_page_lists_every_path_without_outside_resources() -> None:
    doc = build_api().document("Tickwatch", "test")
    page = docs_page(doc)
    for path in doc["paths"]:
        assert path in page
    assert "https://" not in page


def _patterns(node: object) -> list[str]:
    if isinstance(node, dict):
        own = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return own + [p for value in node.values() for p in _patterns(value)]
    if isinstance(node, list):
        return [p for item in node for p in _patterns(item)]
    return []


def test_every_published_pattern_refuses_what_the_gateway_refuses() -> None:
    """A schema whose pattern allows a control character calls a body valid that the gateway
    answers 422 to; one a JSON Schema validator cannot compile is dropped by it whole."""
    from schemathesis.core.jsonschema.patterns import is_valid_jsonschema_rs_regex

    patterns = set(_patterns(build_api().document("Tickwatch", "test")))
    assert len(patterns) >= 3
    for pattern in patterns:
        assert is_valid_jsonschema_rs_regex(pattern), pattern
        for control in ("\x00", "\x01", "\x1f", "\x7f", "\x0b"):
            assert re.search(pattern, f"a{control}b@example.com") is None, (pattern, control)
        if re.search(pattern, "70000\n1") is None:  # one-line text: no final newline either
            assert re.search(pattern, "70000\n") is None, pattern
