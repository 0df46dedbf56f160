"""Condition types and reasons (metav1.Condition shape), in one place.

Reasons are CamelCase, past tense or adjectives, as Kubernetes conventions ask.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from .base import TIME_MAX, TIMESTAMP

CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
CONDITIONS_MAX = 16


class ConditionStatus(StrEnum):
    """Whether the condition holds: True, False or Unknown."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(BaseModel):
    """One aspect of the object's state (metav1.Condition)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    type: str = Field(
        min_length=1,
        max_length=316,
        pattern=CONDITION_TYPE_PATTERN,
        description="Condition type in CamelCase, e.g. 'Ready'.",
    )
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=CONDITION_REASON_PATTERN,
        description="One-word CamelCase reason for the last transition, e.g. 'HealthCheckPassed'.",
    )
    message: str = Field(
        "", max_length=32768, description="Human-readable detail about the last transition."
    )
    last_transition_time: str = Field(
        max_length=TIME_MAX,
        json_schema_extra=TIMESTAMP,
        description="RFC 3339 time the status last changed from one value to another.",
    )
    observed_generation: int | None = Field(
        None,
        ge=0,
        description="metadata.generation the condition was set for; older means stale.",
    )


def unique_condition_types(conditions: Iterable[Condition]) -> None:
    """Mirror of the CRD's list-map on `type`: one condition per type."""
    seen: set[str] = set()
    for condition in conditions:
        if condition.type in seen:
            raise ValueError(f"`conditions` must not repeat type {condition.type!r}")
        seen.add(condition.type)


# Condition types
READY = "Ready"
HEALTHY = "Healthy"
SHADOWED = "Shadowed"
BUDGET_SOFT_LIMIT = "BudgetSoftLimit"
BUDGET_EXHAUSTED = "BudgetExhausted"
NO_ELIGIBLE_BACKENDS = "NoEligibleBackends"
RECONCILERS_READY = "ReconcilersReady"
CREDENTIALS_READY = "CredentialsReady"

# Reasons
ACCEPTED = "Accepted"
HEALTH_CHECK_PASSED = "HealthCheckPassed"
HEALTH_CHECK_FAILED = "HealthCheckFailed"
HEALTH_CHECK_DISABLED = "HealthCheckDisabled"
HEALTH_UNKNOWN = "AwaitingFirstProbe"
DRAINING = "Draining"
SHADOWED_BY_POLICY = "ShadowedByPolicy"
NOT_SHADOWED = "NotShadowed"
ALIAS_CYCLE = "AliasCycle"
ALIAS_DEPTH_EXCEEDED = "AliasDepthExceeded"
BUDGET_WITHIN_LIMIT = "WithinBudget"
SOFT_LIMIT_REACHED = "SoftLimitReached"
HARD_LIMIT_REACHED = "HardLimitReached"
ELIGIBLE_BACKENDS_FOUND = "EligibleBackendsFound"
ALL_BACKENDS_EXCLUDED = "AllBackendsExcluded"
INVALID_SPEC = "InvalidSpec"
# CredentialsReady (only on Backends with credentialsSecretRef)
SECRET_READ = "SecretRead"
SECRET_NOT_FOUND = "SecretNotFound"
KEY_NOT_FOUND = "KeyNotFound"
EMPTY_VALUE = "EmptyValue"
INVALID_VALUE = "InvalidValue"
SECRET_UNREADABLE = "SecretUnreadable"
# A policy that can never route (Ready=False, and NoEligibleBackends=True with the same reason)
NO_MODEL_PATTERNS = "NoModelPatterns"
SELECTOR_MATCHES_NOTHING = "SelectorMatchesNothing"
BUDGET_BLOCKS_ALL = "BudgetBlocksAll"
NO_BACKEND_OFFERS_MODELS = "NoBackendOffersModels"
# Plug-in reconcilers (ReconcilersReady)
RECONCILERS_LOADED = "ReconcilersLoaded"
RECONCILER_UNAVAILABLE = "ReconcilerUnavailable"
