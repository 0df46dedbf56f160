"""The checked-in CRDs are what the models generate, and the generated schemas follow the
API conventions (structural, bounded, described) the API server alone cannot enforce."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nexus_operator.api import crdgen

CRDS_DIR = Path(__file__).resolve().parents[2] / "crds"
KIND_IDS = [kind.kind for kind in crdgen.KINDS]


def _schema(kind: crdgen.Kind) -> dict[str, Any]:
    version = crdgen.crd(kind)["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _nodes(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if "items" in node:
        yield from _nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{path}{{}}")


def _fields(kind: crdgen.Kind) -> Iterator[tuple[str, dict[str, Any]]]:
    root = _schema(kind)
    for part in ("spec", "status"):
        yield from _nodes(root["properties"][part], part)


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=KIND_IDS)
def test_checked_in_crd_matches_the_models(kind: crdgen.Kind) -> None:
    path = CRDS_DIR / crdgen.file_name(kind)
    assert path.read_text(encoding="utf-8") == crdgen.render(kind), (
        f"{path} is stale: run `make manifests`"
    )


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=KIND_IDS)
def test_every_field_has_a_description(kind: crdgen.Kind) -> None:
    undocumented = [
        path
        for path, node in _fields(kind)
        if not path.endswith(("[]", "{}")) and not node.get("description")
    ]
    assert undocumented == []


def _is_unbounded(node: dict[str, Any]) -> bool:
    """Strings need maxLength (or an enum), lists maxItems, free-form maps maxProperties."""
    kind_of = node.get("type")
    if kind_of == "string":
        return "maxLength" not in node and "enum" not in node
    if kind_of == "array":
        return "maxItems" not in node
    return kind_of == "object" and "properties" not in node and "maxProperties" not in node


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=KIND_IDS)
def test_every_string_list_and_map_is_bounded(kind: crdgen.Kind) -> None:
    assert [path for path, node in _fields(kind) if _is_unbounded(node)] == []


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=KIND_IDS)
def test_schema_is_structural(kind: crdgen.Kind) -> None:
    forbidden = {"$ref", "anyOf", "allOf", "oneOf", "title", "propertyNames", "$defs"}
    offenders = [
        (path, sorted(forbidden & node.keys()))
        for path, node in _fields(kind)
        if forbidden & node.keys()
        or node.get("additionalProperties") is False
        or "type" not in node
    ]
    assert offenders == []


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=KIND_IDS)
def test_every_list_declares_its_list_type(kind: crdgen.Kind) -> None:
    missing = [
        path
        for path, node in _fields(kind)
        if node.get("type") == "array" and "x-kubernetes-list-type" not in node
    ]
    assert missing == []


def test_conditions_are_a_map_keyed_by_type() -> None:
    for kind in crdgen.KINDS:
        conditions = _schema(kind)["properties"]["status"]["properties"]["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_only_reconciler_config_preserves_unknown_fields() -> None:
    preserving = [
        f"{kind.kind}:{path}"
        for kind in crdgen.KINDS
        for path, node in _fields(kind)
        if node.get("x-kubernetes-preserve-unknown-fields")
    ]
    assert preserving == ["RoutingPolicy:spec.reconcilers[].config"]


def test_absent_nested_objects_default_to_the_models_defaults() -> None:
    selection = _schema(crdgen.ROUTING_POLICY)["properties"]["spec"]["properties"]["selection"]
    assert selection["default"] == {
        "strategy": "smart",
        "weights": {"priority": 50, "load": 30, "latency": 20},
    }


@pytest.mark.parametrize(
    ("kind", "columns"),
    [
        (crdgen.BACKEND, ["TYPE", "ZONE", "TIER", "HEALTH", "LATENCY(MS)", "AGE"]),
        (
            crdgen.ROUTING_POLICY,
            ["PATTERNS", "PRECEDENCE", "PRIVACY", "STRATEGY", "ELIGIBLE", "BUDGET", "AGE"],
        ),
    ],
    ids=KIND_IDS,
)
def test_default_printer_columns_follow_the_spec(kind: crdgen.Kind, columns: list[str]) -> None:
    printed = crdgen.crd(kind)["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in printed if not c.get("priority")] == columns


def test_numeric_columns_name_their_unit() -> None:
    wide = {
        c["name"]
        for kind in crdgen.KINDS
        for c in crdgen.crd(kind)["spec"]["versions"][0]["additionalPrinterColumns"]
    }
    assert {"LATENCY(MS)", "SPENT(USD)"} <= wide
    assert not {"LATENCY", "SPENT"} & wide
