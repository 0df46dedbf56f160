"""The CRD reference (docs/crd-reference.md), rendered from the same schema as the CRDs.

One table per object level, every field with its type, default, bounds and description, so
the reference can never say something the API server does not enforce.
"""

from __future__ import annotations

import json
from typing import Any

from .crdgen import KINDS, Kind, crd

Schema = dict[str, Any]

_BOUNDS = (
    ("minimum", "≥ {}"),
    ("maximum", "≤ {}"),
    ("minLength", "length ≥ {}"),
    ("maxLength", "length ≤ {}"),
    ("minItems", "items ≥ {}"),
    ("maxItems", "items ≤ {}"),
    ("maxProperties", "entries ≤ {}"),
    ("pattern", "pattern `{}`"),
)


def render_reference() -> str:
    lines = [
        "# CRD reference",
        "",
        "Generated from the pydantic models by `make manifests` (`nexus-operator crds "
        "--reference`); do not edit. `kubectl explain backend.spec` shows the same descriptions.",
        "",
    ]
    for kind in KINDS:
        lines += _kind_section(kind)
    return "\n".join(lines)


def _kind_section(kind: Kind) -> list[str]:
    version = crd(kind)["spec"]["versions"][0]
    root = version["schema"]["openAPIV3Schema"]
    lines = [
        f"## {kind.kind} (`{kind.plural}`, short name `{kind.short_name}`)",
        "",
        root["description"],
        "",
        "Printer columns: "
        + ", ".join(f"{c['name']} (`{c['jsonPath']}`)" for c in version["additionalPrinterColumns"])
        + ".",
        "",
    ]
    for part in ("spec", "status"):
        lines += _object_tables(f"{part}", root["properties"][part])
    return lines


def _object_tables(path: str, node: Schema) -> list[str]:
    """A table for the object at `path`, then one for each nested object, depth first."""
    props: Schema = node.get("properties", {})
    if not props:
        return []
    required = set(node.get("required", []))
    lines = [f"### `{path}`", ""]
    if node.get("description"):
        lines += [_one_line(node["description"]), ""]
    lines += _rules(node)
    lines += ["| field | type | default | description |", "|---|---|---|---|"]
    nested: list[tuple[str, Schema]] = []
    for name, child in props.items():
        lines.append(_row(name, child, required=name in required))
        target = child.get("items", child) if child.get("type") == "array" else child
        if target.get("properties"):
            suffix = "[]" if child.get("type") == "array" else ""
            nested.append((f"{path}.{name}{suffix}", target))
    lines.append("")
    for child_path, child in nested:
        lines += _object_tables(child_path, child)
    return lines


def _row(name: str, node: Schema, *, required: bool) -> str:
    default = f"`{json.dumps(node['default'])}`" if "default" in node else ""
    notes = [_one_line(node.get("description", ""))]
    if required:
        notes.append("**Required.**")
    if "enum" in node:
        notes.append("One of " + ", ".join(f"`{v}`" for v in node["enum"]) + ".")
    bounds = [fmt.format(node[key]) for key, fmt in _BOUNDS if key in node]
    items = node.get("items", {})
    bounds += [f"each {fmt.format(items[key])}" for key, fmt in _BOUNDS if key in items]
    if bounds:
        notes.append("Bounds: " + "; ".join(bounds) + ".")
    notes += [f"Rule: {rule['message']}" for rule in node.get("x-kubernetes-validations", [])]
    return f"| `{name}` | {_type(node)} | {default} | {' '.join(n for n in notes if n)} |"


def _rules(node: Schema) -> list[str]:
    rules = node.get("x-kubernetes-validations", [])
    if not rules:
        return []
    return ["Rules: " + " ".join(f"{r['message']}." for r in rules), ""]


def _type(node: Schema) -> str:
    kind = node.get("type", "any")
    if kind == "array":
        return f"[]{_type(node.get('items', {}))}"
    if kind == "object" and "additionalProperties" in node:
        return f"map[string]{_type(node['additionalProperties'])}"
    if node.get("format"):
        return f"{kind} ({node['format']})"
    return str(kind)


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
