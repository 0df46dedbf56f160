"""Shared pydantic configuration for the custom resources.

Python attributes are snake_case; the wire (and CRD) names are camelCase aliases.
Spec models are frozen: a registry snapshot may hold them without copying.

Rules the OpenAPI schema cannot express are written once, as `CelRule`s: the CRD
generator emits them as `x-kubernetes-validations` and the pydantic validators raise
the same message, so the API server and the models reject the same input alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

GROUP = "nexus.routing.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Bounds shared by many fields (keep CEL cost estimates small and etcd objects sane).
NAME_MAX = 253
MODEL_ID_MAX = 256
URL_MAX = 2048
MESSAGE_MAX = 1024
TIME_MAX = 64
LABEL_KEY_MAX = 317
LABEL_VALUE_MAX = 63

# Model ids and names: any printable text, no control characters (C0 and DEL), which would break
# log lines, `kubectl get` columns and header values.
MODEL_ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"

# JSON-schema extras for RFC 3339 timestamps: the API server checks the format.
TIMESTAMP: JsonDict = {"format": "date-time"}


@dataclass(frozen=True)
class CelRule:
    """One `x-kubernetes-validations` entry; `message` names the field it guards.

    `field_path` (relative to the node carrying the rule) makes the API server report
    the error at that field rather than at the enclosing object.
    """

    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None

    def as_schema(self) -> dict[str, str]:
        entry = {"rule": self.rule, "message": self.message}
        if self.field_path is not None:
            entry["fieldPath"] = self.field_path
        if self.reason is not None:
            entry["reason"] = self.reason
        return entry


def validations(*rules: CelRule) -> JsonDict:
    """JSON-schema extra carrying CEL rules, for a field's or a model's `json_schema_extra`."""
    return {"x-kubernetes-validations": [dict(rule.as_schema()) for rule in rules]}


def list_map(*keys: str) -> JsonDict:
    """JSON-schema extra for a list that is a map keyed by `keys` (unique keys, SSA-friendly)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [*keys]}


LIST_SET: JsonDict = {"x-kubernetes-list-type": "set"}


class SpecModel(BaseModel):
    """Immutable part of a custom resource: unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=False,
    )


class StatusModel(BaseModel):
    """Observed state written by the operator; mutable while it is being assembled."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
    )


class ObjectMeta(BaseModel):
    """The subset of metav1.ObjectMeta the operator reads."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    name: str
    namespace: str = "default"
    generation: int = 0
    resource_version: str | None = None
    uid: str | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
