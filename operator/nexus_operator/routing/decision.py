"""The routing engine's answer and the usage report that closes a routed request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from nexus_operator.api import BackendType, BudgetState, Zone, redact_url
from nexus_operator.pipeline import BackendView, Exclusion, TraceEntry


class Outcome(StrEnum):
    ROUTED = "ROUTED"
    QUEUED = "QUEUED"
    REJECTED = "REJECTED"


@dataclass(frozen=True, slots=True)
class BackendRef:
    name: str
    namespace: str
    url: str
    type: BackendType
    zone: Zone
    tier: int

    @classmethod
    def of(cls, view: BackendView) -> BackendRef:
        """`url` without user-info: a decision is printed (gRPC, nexusctl, gateway headers)."""
        return cls(view.name, view.namespace, redact_url(view.url), view.type, view.zone, view.tier)


@dataclass(slots=True)
class Decision:
    """Route {backend, model, reason, cost} | Queue {reason, wait} | Reject {rejections}.

    `model` is the resolved model of the attempt that produced the decision (the primary's
    for Reject); `policy` is the policy that governed it. `rejections` carries every attempt's
    reasons (fallbacks included) on Reject; `exclusions` every exclusion of every attempt.
    """

    outcome: Outcome
    model: str
    reason: str
    backend: BackendRef | None = None
    policy: str | None = None
    cost_estimate: float = 0.0
    budget_state: BudgetState | None = None
    fallback_used: bool = False
    rejections: list[Exclusion] = field(default_factory=list)
    available_models: list[str] = field(default_factory=list)
    retry_after_ms: int | None = None
    estimated_wait_ms: int | None = None
    trace: list[TraceEntry] = field(default_factory=list)
    exclusions: list[Exclusion] = field(default_factory=list)
    request_id: str | None = None
    exclusion_counts: Mapping[tuple[str, str], int] | None = None
    """`exclusions` counted by (reconciler, reason code), as the engine fills it at a cost of
    the reason codes (plan blocks come counted); None when the decision was built without."""
    shared_exclusions: tuple[Exclusion, ...] = ()
    """The plan-owned block `exclusions` starts with (the primary attempt's static
    exclusions), the same tuple for every decision of that plan: responses render it once."""

    def count_exclusions(self) -> Mapping[tuple[str, str], int]:
        """`exclusion_counts`, or `exclusions` counted one by one when it is not set."""
        if self.exclusion_counts is not None:
            return self.exclusion_counts
        counts: dict[tuple[str, str], int] = {}
        for exclusion in self.exclusions:
            key = (exclusion.reconciler, exclusion.reason_code)
            counts[key] = counts.get(key, 0) + 1
        return counts


@dataclass(frozen=True, slots=True)
class UsageReport:
    """What the data plane reports after a routed request finished."""

    backend: str
    model: str
    namespace: str = "default"
    policy: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    success: bool = True
    latency_ms: float | None = None
    ttft_ms: float | None = None
    request_id: str | None = None
