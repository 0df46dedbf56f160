"""Condition types and reasons (metav1.Condition shape), in one place.

Reasons are CamelCase, past tense or adjectives, as Kubernetes conventions ask.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(BaseModel):
    """metav1.Condition."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    type: str = Field(max_length=316, pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$", description="Condition type, e.g. Ready.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", description="CamelCase reason.")
    message: str = Field("", max_length=32768, description="Human-readable detail.")
    last_transition_time: str = Field(description="RFC 3339 time the status last changed.")
    observed_generation: int | None = Field(None, ge=0, description="Generation the condition reflects.")


# Condition types
READY = "Ready"
HEALTHY = "Healthy"
SHADOWED = "Shadowed"
BUDGET_SOFT_LIMIT = "BudgetSoftLimit"
BUDGET_EXHAUSTED = "BudgetExhausted"
NO_ELIGIBLE_BACKENDS = "NoEligibleBackends"

# Reasons
RECONCILING = "Reconciling"
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
