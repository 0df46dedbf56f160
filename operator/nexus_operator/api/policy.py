"""The RoutingPolicy custom resource: which backends may serve which models, and how."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, model_validator

from .base import MODEL_ID_MAX, NAME_MAX, ObjectMeta, SpecModel, StatusModel
from .conditions import Condition

GLOB_PATTERN = r"^[A-Za-z0-9._:/@*?\[\]{},!-]+$"


class Privacy(StrEnum):
    UNRESTRICTED = "unrestricted"
    RESTRICTED = "restricted"


class HardLimitAction(StrEnum):
    WARN = "warn"
    BLOCK_CLOUD = "blockCloud"
    BLOCK_ALL = "blockAll"


class Accounting(StrEnum):
    REPORTED = "reported"
    ESTIMATED = "estimated"


class Strategy(StrEnum):
    SMART = "smart"
    ROUND_ROBIN = "roundRobin"
    PRIORITY_ONLY = "priorityOnly"
    RANDOM = "random"
    LEAST_LATENCY = "leastLatency"


class LabelSelectorRequirement(SpecModel):
    """One label selector requirement (metav1.LabelSelectorRequirement)."""

    key: str = Field(min_length=1, max_length=NAME_MAX, description="Label key.")
    operator: str = Field(pattern=r"^(In|NotIn|Exists|DoesNotExist)$", max_length=16, description="In, NotIn, Exists or DoesNotExist.")
    values: Annotated[list[Annotated[str, Field(max_length=63)]], Field(max_length=64)] = Field(default_factory=list, description="Values for In and NotIn.")


class LabelSelector(SpecModel):
    """metav1.LabelSelector over Backend labels."""

    match_labels: dict[str, Annotated[str, Field(max_length=63)]] = Field(default_factory=dict, max_length=64, description="Labels a Backend must carry.")
    match_expressions: Annotated[list[LabelSelectorRequirement], Field(max_length=64)] = Field(default_factory=list, description="Set-based requirements.")


class RequiredCapabilities(SpecModel):
    """Capabilities every request under this policy needs."""

    vision: bool = Field(False, description="Backends must support image inputs.")
    tools: bool = Field(False, description="Backends must support tool calling.")
    json_mode: bool = Field(False, description="Backends must support JSON mode.")
    min_context_length: int = Field(0, ge=0, le=10_000_000, description="Minimum context length in tokens.")


class Budget(SpecModel):
    """Monthly spend limit for requests matched by this policy."""

    monthly_limit_usd: float | None = Field(None, ge=0, le=10_000_000, description="Monthly limit in USD; no limit when absent.")
    soft_limit_percent: int = Field(75, ge=1, le=99, description="Utilisation (percent, below 100) at which Open-zone backends are de-prioritised.")
    hard_limit_action: HardLimitAction = Field(HardLimitAction.BLOCK_CLOUD, description="At 100 %: warn (nothing excluded), blockCloud (Open zones excluded) or blockAll.")
    accounting: Accounting = Field(Accounting.REPORTED, description="reported: spend comes from ReportUsage; estimated: each Route adds its estimate.")


class Weights(SpecModel):
    """Weights of the smart strategy's score; they must sum to 100."""

    priority: int = Field(50, ge=0, le=100, description="Weight of the backend's priority.")
    load: int = Field(30, ge=0, le=100, description="Weight of the in-flight load.")
    latency: int = Field(20, ge=0, le=100, description="Weight of the latency EMA.")

    @model_validator(mode="after")
    def _sum_to_100(self) -> Weights:
        if self.priority + self.load + self.latency != 100:
            raise ValueError("`selection.weights` must sum to 100")
        return self


class Selection(SpecModel):
    """How one backend is picked among the eligible ones."""

    strategy: Strategy = Field(Strategy.SMART, description="smart, roundRobin, priorityOnly, random or leastLatency.")
    weights: Weights = Field(default_factory=Weights, description="Weights of the smart strategy.")


class Quality(SpecModel):
    """Exclusion and penalties from reported outcomes."""

    enabled: bool = Field(True, description="Exclude backends whose 1-hour error rate reaches the threshold.")
    error_rate_threshold: float = Field(0.5, gt=0, le=1, description="Error rate (0 < t <= 1) at which a backend is excluded.")
    ttft_penalty_threshold_ms: int = Field(3000, ge=0, le=600_000, description="Time-to-first-token above which smart scores are penalised; 0 disables.")


class ReconcilerRef(SpecModel):
    """An extra (plug-in) reconciler, by registered name, inserted before selection."""

    name: str = Field(min_length=1, max_length=128, description="Registered name in the 'nexus_operator.reconcilers' entry-point group.")
    config: dict[str, Any] = Field(default_factory=dict, max_length=64, description="Configuration passed to the reconciler.")


class RoutingPolicySpec(SpecModel):
    """Desired routing behaviour for the models matched by `modelPatterns`."""

    model_patterns: Annotated[list[Annotated[str, Field(min_length=1, max_length=MODEL_ID_MAX, pattern=GLOB_PATTERN)]], Field(max_length=64)] = Field(default_factory=list, description="Globs ('*', '?', '[..]', '{a,b}') matched against the resolved model.")
    precedence: int = Field(1000, ge=0, le=10000, description="Lower wins when several policies match.")
    backend_selector: LabelSelector | None = Field(None, description="Backends in scope; default all in the namespace.")
    privacy: Privacy = Field(Privacy.UNRESTRICTED, description="restricted excludes every Open-zone backend.")
    min_tier: int = Field(1, ge=1, le=5, description="Backends below this tier are excluded.")
    required_capabilities: RequiredCapabilities = Field(default_factory=RequiredCapabilities, description="Capabilities every request needs.")
    aliases: dict[Annotated[str, Field(max_length=MODEL_ID_MAX)], Annotated[str, Field(min_length=1, max_length=MODEL_ID_MAX)]] = Field(default_factory=dict, max_length=128, description="Model name aliases (name: target), namespace-wide.")
    fallbacks: Annotated[list[Annotated[str, Field(min_length=1, max_length=MODEL_ID_MAX)]], Field(max_length=16)] = Field(default_factory=list, description="Models tried in order when the primary is rejected.")
    fallback_allowed: bool = Field(True, description="Set false to never try fallbacks.")
    budget: Budget | None = Field(None, description="Monthly budget.")
    max_cost_per_request_usd: float | None = Field(None, ge=0, le=100_000, description="Candidates whose estimate exceeds this are excluded.")
    selection: Selection = Field(default_factory=Selection, description="Selection strategy.")
    quality: Quality = Field(default_factory=Quality, description="Quality settings.")
    reconcilers: Annotated[list[ReconcilerRef], Field(max_length=16)] = Field(default_factory=list, description="Extra reconcilers inserted before selection.")

    @model_validator(mode="after")
    def _aliases_differ(self) -> RoutingPolicySpec:
        for name, target in self.aliases.items():
            if name == target:
                raise ValueError(f"`aliases` target must differ from its name ({name!r})")
        return self


class BudgetState(StrEnum):
    NORMAL = "Normal"
    SOFT_LIMIT = "SoftLimit"
    HARD_LIMIT = "HardLimit"


class BudgetStatus(StatusModel):
    """Spend in the current period."""

    period: str = Field(max_length=7, pattern=r"^\d{4}-\d{2}$", description="Budget period, 'YYYY-MM' in UTC.")
    spent_usd: float = Field(0.0, ge=0, description="Spend in the period, in USD.")
    limit_usd: float | None = Field(None, ge=0, description="Monthly limit in USD.")
    utilization_percent: float = Field(0.0, ge=0, description="spentUsd / limitUsd in percent.")
    state: BudgetState = Field(BudgetState.NORMAL, description="Normal, SoftLimit or HardLimit.")
    resets_at: str | None = Field(None, description="RFC 3339 time of the next rollover.")
    previous_period: str | None = Field(None, max_length=7, description="The period before this one.")
    previous_spent_usd: float | None = Field(None, ge=0, description="Spend recorded in the previous period.")


class PolicyExclusion(StatusModel):
    """Why a backend in scope is excluded by this policy whatever the request."""

    backend: str = Field(max_length=NAME_MAX, description="Name of the Backend.")
    reconciler: str = Field(max_length=128, description="Reconciler that excludes it.")
    reason_code: str = Field(max_length=64, description="Machine-readable reason.")
    reason: str = Field(max_length=1024, description="Human-readable reason.")
    suggested_action: str = Field("", max_length=1024, description="What would make it eligible.")


class LastRouted(StatusModel):
    time: str = Field(description="RFC 3339 time.")
    model: str = Field(max_length=MODEL_ID_MAX, description="Resolved model.")
    backend: str = Field(max_length=NAME_MAX, description="Selected backend.")
    reason: str = Field(max_length=1024, description="Route reason.")


class LastRejected(StatusModel):
    time: str = Field(description="RFC 3339 time.")
    model: str = Field(max_length=MODEL_ID_MAX, description="Requested model.")
    reasons: Annotated[list[Annotated[str, Field(max_length=1024)]], Field(max_length=16)] = Field(default_factory=list, description="Rejection reasons.")


class DecisionCounters(StatusModel):
    routed: int = Field(0, ge=0, description="Route decisions.")
    rejected: int = Field(0, ge=0, description="Reject decisions.")
    queued: int = Field(0, ge=0, description="Queue decisions.")
    last_routed: LastRouted | None = Field(None, description="The last routed decision.")
    last_rejected: LastRejected | None = Field(None, description="The last rejected decision.")


class RoutingPolicyStatus(StatusModel):
    observed_generation: int | None = Field(None, ge=0, description="Generation the status reflects.")
    conditions: Annotated[list[Condition], Field(max_length=16)] = Field(default_factory=list, description="Ready, Shadowed, BudgetSoftLimit, BudgetExhausted, NoEligibleBackends.")
    matched_backends: int = Field(0, ge=0, description="Backends in scope.")
    eligible_backends: Annotated[list[Annotated[str, Field(max_length=NAME_MAX)]], Field(max_length=100)] = Field(default_factory=list, description="Backends not excluded statically (first 100).")
    exclusions: Annotated[list[PolicyExclusion], Field(max_length=256)] = Field(default_factory=list, description="Static exclusions with reasons.")
    budget: BudgetStatus | None = Field(None, description="Budget spend.")
    decisions: DecisionCounters | None = Field(None, description="Decision counters.")


class RoutingPolicy(SpecModel):
    """A RoutingPolicy object as read from the API server."""

    model_config = SpecModel.model_config | {"extra": "ignore"}

    metadata: ObjectMeta
    spec: RoutingPolicySpec
    status: RoutingPolicyStatus | None = None
