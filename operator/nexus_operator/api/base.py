"""Shared pydantic configuration for the custom resources.

Python attributes are snake_case; the wire (and CRD) names are camelCase aliases.
Spec models are frozen: a registry snapshot may hold them without copying.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

GROUP = "nexus.routing.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Bounds shared by many fields (keep CEL cost estimates small and etcd objects sane).
NAME_MAX = 253
MODEL_ID_MAX = 256
URL_MAX = 2048
MESSAGE_MAX = 1024


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
