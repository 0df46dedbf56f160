"""Generate the CustomResourceDefinitions from the pydantic models.

The models are the single source of truth; this module turns their JSON schema into a
structural OpenAPI v3 schema the API server accepts:

- `$ref`s are inlined and `anyOf [X, null]` collapses to X (absent, never null);
- `title` and `additionalProperties: false` go (unknown fields are pruned or rejected
  by the API server's field validation), `additionalProperties: true` becomes
  `x-kubernetes-preserve-unknown-fields` (only `reconcilers[].config`);
- `propertyNames` bounds, which structural schemas cannot carry, become CEL rules;
- every list gets a `x-kubernetes-list-type` (`atomic` unless the model says otherwise);
- a nested object with a default factory gets that object as its default, so an absent
  `selection` reads back complete; `None`, empty-list and empty-map defaults are left out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema

from .backend import BackendSpec, BackendStatus
from .base import GROUP, VERSION
from .policy import RoutingPolicySpec, RoutingPolicyStatus

Schema = dict[str, Any]

# Key order inside one schema node, so the YAML reads top-down like `kubectl explain`.
_KEY_ORDER = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "maxProperties",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields",
    "items",
    "additionalProperties",
    "properties",
    "required",
    "x-kubernetes-validations",
)
_DROPPED = frozenset({"title", "$defs"})


@dataclass(frozen=True)
class PrinterColumn:
    """One `additionalPrinterColumns` entry."""

    name: str
    json_path: str
    type: str
    description: str
    priority: int = 0

    def as_dict(self) -> dict[str, Any]:
        column: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "description": self.description,
            "jsonPath": self.json_path,
        }
        if self.priority:
            column["priority"] = self.priority
        return column


@dataclass(frozen=True)
class Kind:
    """Everything the CRD of one kind is generated from."""

    kind: str
    plural: str
    short_name: str
    description: str
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: tuple[PrinterColumn, ...]

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


_READY = PrinterColumn(
    "READY", '.status.conditions[?(@.type=="Ready")].status', "string", "Ready condition.", 1
)
_AGE = PrinterColumn("AGE", ".metadata.creationTimestamp", "date", "Time since creation.")

BACKEND = Kind(
    kind="Backend",
    plural="backends",
    short_name="be",
    description="Backend is one LLM inference server the router may send requests to.",
    spec=BackendSpec,
    status=BackendStatus,
    columns=(
        PrinterColumn("TYPE", ".spec.type", "string", "Inference server flavour."),
        PrinterColumn("ZONE", ".status.zone", "string", "Effective privacy zone."),
        PrinterColumn("TIER", ".spec.tier", "integer", "Capability tier."),
        PrinterColumn("HEALTH", ".status.health.state", "string", "Health probing verdict."),
        PrinterColumn(
            "LATENCY(MS)", ".status.health.latencyMs", "number", "Probe latency EMA, milliseconds."
        ),
        _READY,
        # No URL column: a printer column shows `spec.url` as stored, and one stored before the
        # user-info rule may hold a password; kubectl cannot redact it (docs/api.md).
        _AGE,
    ),
)

ROUTING_POLICY = Kind(
    kind="RoutingPolicy",
    plural="routingpolicies",
    short_name="rp",
    description=(
        "RoutingPolicy decides which Backends may serve the models it matches, "
        "and how one is picked."
    ),
    spec=RoutingPolicySpec,
    status=RoutingPolicyStatus,
    columns=(
        PrinterColumn("PATTERNS", ".spec.modelPatterns", "string", "Model globs matched."),
        PrinterColumn(
            "PRECEDENCE", ".spec.precedence", "integer", "Lower wins when several policies match."
        ),
        PrinterColumn("PRIVACY", ".spec.privacy", "string", "unrestricted or restricted."),
        PrinterColumn("STRATEGY", ".spec.selection.strategy", "string", "Selection strategy."),
        PrinterColumn(
            "ELIGIBLE", ".status.eligibleCount", "integer", "Backends not excluded statically."
        ),
        PrinterColumn("BUDGET", ".status.budget.state", "string", "Budget state."),
        PrinterColumn(
            "SPENT(USD)", ".status.budget.spentUsd", "number", "Spend this month, USD.", 1
        ),
        _READY,
        _AGE,
    ),
)

KINDS = (BACKEND, ROUTING_POLICY)


class _CrdJsonSchema(GenerateJsonSchema):
    """JSON schema with the full default of nested objects built by a default factory.

    The full object, not `{}`: the API server checks a default against the node's CEL
    rules without first filling in the defaults of its fields.
    """

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory: Callable[[], Any] | None = schema.get("default_factory")  # type: ignore[assignment]
        if factory is not None and not schema.get("default_factory_takes_data"):
            value = factory()
            if isinstance(value, BaseModel):
                return value.model_dump(mode="json", by_alias=True, exclude_none=True)
            return NoDefault
        return super().get_default_value(schema)


def structural_schema(model: type[BaseModel]) -> Schema:
    """The model's JSON schema as a structural OpenAPI v3 schema (see module docstring)."""
    raw = model.model_json_schema(by_alias=True, schema_generator=_CrdJsonSchema)
    return _convert(raw, defs=raw.get("$defs", {}), name=model.__name__)


def _convert(node: Schema, *, defs: Schema, name: str) -> Schema:
    node = _resolve(node, defs=defs)
    out: Schema = {k: v for k, v in node.items() if k not in _DROPPED}
    if out.get("default", NoDefault) is None:
        del out["default"]
    _convert_children(out, defs=defs, name=name)
    _convert_maps(out, name=name)
    _convert_exclusive_bounds(out)
    if out.get("type") == "array":
        out.setdefault("x-kubernetes-list-type", "atomic")
    if "x-kubernetes-validations" in out:
        out["x-kubernetes-validations"] = [
            _ordered_rule(r) for r in out["x-kubernetes-validations"]
        ]
    return _ordered(out)


def _convert_exclusive_bounds(out: Schema) -> None:
    """JSON Schema 2020-12 exclusive bounds are numbers; OpenAPI v3.0's are flags on min/max."""
    for exclusive, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if exclusive in out and not isinstance(out[exclusive], bool):
            out[inclusive] = out[exclusive]
            out[exclusive] = True


def _resolve(node: Schema, *, defs: Schema) -> Schema:
    """Inline `$ref` and collapse `anyOf [X, null]`; keys beside them win over the target's."""
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return _resolve({**target, **siblings}, defs=defs)
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b != {"type": "null"}]
        if len(branches) != 1:
            raise ValueError(f"cannot express anyOf {node['anyOf']!r} structurally")
        siblings = {k: v for k, v in node.items() if k != "anyOf"}
        return _resolve({**branches[0], **siblings}, defs=defs)
    return node


def _convert_children(out: Schema, *, defs: Schema, name: str) -> None:
    if "properties" in out:
        out["properties"] = {
            key: _convert(sub, defs=defs, name=key) for key, sub in out["properties"].items()
        }
    if "items" in out:
        out["items"] = _convert(out["items"], defs=defs, name=name)
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _convert(out["additionalProperties"], defs=defs, name=name)


def _convert_maps(out: Schema, *, name: str) -> None:
    additional = out.get("additionalProperties")
    if additional is False:
        del out["additionalProperties"]
    elif additional is True or (out.get("type") == "object" and additional == {}):
        del out["additionalProperties"]
        out["x-kubernetes-preserve-unknown-fields"] = True
    keys = out.pop("propertyNames", None)
    if keys is not None:
        rules = out.setdefault("x-kubernetes-validations", [])
        rules.insert(0, _key_bounds_rule(keys, name=name))


def _key_bounds_rule(keys: Schema, *, name: str) -> dict[str, str]:
    unsupported = set(keys) - {"minLength", "maxLength"}
    if unsupported:
        raise ValueError(f"`{name}` keys: cannot express {sorted(unsupported)} in CEL here")
    low, high = keys.get("minLength", 0), keys["maxLength"]
    return {
        "rule": f"self.all(k, size(k) >= {low} && size(k) <= {high})",
        "message": f"`{name}` keys must be {low} to {high} characters long",
    }


def _ordered_rule(rule: dict[str, str]) -> dict[str, str]:
    order = ("rule", "message", "fieldPath", "reason")
    return {key: rule[key] for key in order if key in rule}


def _ordered(node: Schema) -> Schema:
    rank = {key: i for i, key in enumerate(_KEY_ORDER)}
    return dict(sorted(node.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0])))


def crd(kind: Kind) -> Schema:
    """The CustomResourceDefinition of one kind, as a plain dict."""
    root = {
        "description": kind.description,
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": f"API version of the object, '{GROUP}/{VERSION}'.",
                "type": "string",
            },
            "kind": {"description": f"Kind of the object, '{kind.kind}'.", "type": "string"},
            "metadata": {"type": "object"},
            "spec": structural_schema(kind.spec),
            "status": structural_schema(kind.status),
        },
        "required": ["spec"],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": [kind.short_name],
                "categories": ["nexus"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [c.as_dict() for c in kind.columns],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render(kind: Kind) -> str:
    """One CRD as YAML, byte-for-byte reproducible."""
    header = "# Generated from the pydantic models by `make manifests`; do not edit.\n"
    return header + yaml.safe_dump(crd(kind), sort_keys=False, width=100, allow_unicode=True)


def file_name(kind: Kind) -> str:
    return f"{kind.crd_name}.yaml"
