"""The RoutingPolicy custom resource: which backends may serve which models, and how."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from .backend import ExclusionReason
from .base import (
    LABEL_KEY_MAX,
    LABEL_VALUE_MAX,
    LIST_SET,
    MESSAGE_MAX,
    MODEL_ID_MAX,
    MODEL_ID_PATTERN,
    NAME_MAX,
    TIME_MAX,
    TIMESTAMP,
    CelRule,
    ObjectMeta,
    SpecModel,
    StatusModel,
    list_map,
    validations,
)
from .conditions import CONDITIONS_MAX, Condition, unique_condition_types
from .globs import REVERSED_RANGE_PATTERN, GlobError, translate

# Letters, digits, the characters of model ids ('._:/@-') and the glob syntax ('*?[]{},!').
GLOB_PATTERN = r"^[A-Za-z0-9._:/@*?\[\]{},!-]+$"
GLOB_RULE = CelRule(
    rule=f"self.matches(r'{GLOB_PATTERN}')",
    message="`modelPatterns` entries must use only letters, digits, '._:/@-' and the glob characters '*?[]{},!'",
)
# The same verdict as api.globs.translate, found by one regex CEL can afford (see there).
GLOB_RANGE_RULE = CelRule(
    rule=f"!self.matches(r'{REVERSED_RANGE_PATTERN}')",
    message="`modelPatterns` entries must not hold a reversed character range such as '[z-a]'",
)
# A '{' with no '}' after it opens an alternation that never closes: the pattern would match
# only the literal text, which no model id is meant to be. (A nested unclosed brace that this
# regex cannot see is refused by the models, through api.globs.translate.)
UNCLOSED_BRACE_PATTERN = r"\{[^}]*$"
GLOB_BRACE_RULE = CelRule(
    rule=f"!self.matches(r'{UNCLOSED_BRACE_PATTERN}')",
    message="`modelPatterns` entries must close every '{' of an alternation with '}'",
)
BUDGET_LIMIT_RULE = CelRule(
    rule="has(self.monthlyLimitUsd)",
    message="`budget` needs `monthlyLimitUsd`; omit `budget` for no limit",
    field_path=".monthlyLimitUsd",
    reason="FieldValueRequired",
)
# Entry-point names as packaging writes them (the registered set itself is only known at run
# time: an unknown name shows as ReconcilersReady=False on the policy's status).
RECONCILER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
WEIGHTS_RULE = CelRule(
    rule="self.priority + self.load + self.latency == 100",
    message="`selection.weights` priority + load + latency must sum to 100",
)
ALIASES_RULE = CelRule(
    rule="self.all(name, self[name] != name)",
    message="`aliases` targets must differ from their names",
)
SOFT_LIMIT_RULE = CelRule(rule="self < 100", message="`softLimitPercent` must be below 100")
MIN_TIER_RULE = CelRule(
    rule="self >= 1 && self <= 5", message="`minTier` must be between 1 and 5 inclusive"
)


def _glob(pattern: str) -> str:
    if re.fullmatch(GLOB_PATTERN, pattern) is None:
        raise ValueError(GLOB_RULE.message)
    if re.search(UNCLOSED_BRACE_PATTERN, pattern) is not None:
        raise ValueError(GLOB_BRACE_RULE.message)
    return pattern


ModelGlob = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MODEL_ID_MAX,
        json_schema_extra=validations(GLOB_RULE, GLOB_RANGE_RULE, GLOB_BRACE_RULE),
    ),
    AfterValidator(_glob),
]
ModelName = Annotated[str, Field(min_length=1, max_length=MODEL_ID_MAX, pattern=MODEL_ID_PATTERN)]
# Map keys: the CRD can bound their length only (CEL), so no pattern here.
AliasName = Annotated[str, Field(min_length=1, max_length=MODEL_ID_MAX)]


class Privacy(StrEnum):
    """Which privacy zones may serve: unrestricted (any) or restricted (Restricted zone only)."""

    UNRESTRICTED = "unrestricted"
    RESTRICTED = "restricted"


PrivacyConstraint = Privacy  # the seed's name: PrivacyReconciler(PrivacyConstraint.RESTRICTED)


class HardLimitAction(StrEnum):
    """What happens at 100 % of the monthly budget."""

    WARN = "warn"
    BLOCK_CLOUD = "blockCloud"
    BLOCK_ALL = "blockAll"


class Accounting(StrEnum):
    """Where budget spend comes from."""

    REPORTED = "reported"
    ESTIMATED = "estimated"


class Strategy(StrEnum):
    """How one backend is picked among the eligible ones."""

    SMART = "smart"
    ROUND_ROBIN = "roundRobin"
    PRIORITY_ONLY = "priorityOnly"
    RANDOM = "random"
    LEAST_LATENCY = "leastLatency"


# What each strategy does, as `kubectl explain` shows it. The pick functions are the table
# `pipeline.strategies.PICKS`; a unit test checks both name every Strategy member.
STRATEGY_SUMMARIES: Final[Mapping[Strategy, str]] = {
    Strategy.SMART: "highest weighted score of priority, in-flight load and latency EMA",
    Strategy.ROUND_ROBIN: "each candidate in turn, in name order, per model",
    Strategy.PRIORITY_ONLY: "lowest priority value",
    Strategy.RANDOM: "uniformly at random",
    Strategy.LEAST_LATENCY: "lowest latency EMA (unmeasured counts as 0 ms)",
}


def strategy_description() -> str:
    """The `selection.strategy` field's description, one clause per strategy."""
    clauses = "; ".join(f"{s.value}: {text}" for s, text in STRATEGY_SUMMARIES.items())
    return f"How one backend is picked among the eligible ones ({clauses}); ties break by name ascending."


class LabelSelectorRequirement(SpecModel):
    """One label selector requirement (metav1.LabelSelectorRequirement)."""

    key: str = Field(
        min_length=1, max_length=LABEL_KEY_MAX, description="Label key the requirement applies to."
    )
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="Relation of the key to the values: In, NotIn, Exists or DoesNotExist."
    )
    values: Annotated[
        list[Annotated[str, Field(max_length=LABEL_VALUE_MAX)]], Field(max_length=64)
    ] = Field(
        default_factory=list,
        description="Values for In and NotIn (non-empty there); empty for Exists and DoesNotExist.",
    )


class LabelSelector(SpecModel):
    """metav1.LabelSelector over Backend labels; the requirements are ANDed."""

    match_labels: dict[
        Annotated[str, Field(min_length=1, max_length=LABEL_KEY_MAX)],
        Annotated[str, Field(max_length=LABEL_VALUE_MAX)],
    ] = Field(
        default_factory=dict, max_length=64, description="Labels a Backend must carry (key: value)."
    )
    match_expressions: Annotated[list[LabelSelectorRequirement], Field(max_length=64)] = Field(
        default_factory=list, description="Set-based requirements on Backend labels."
    )


class RequiredCapabilities(SpecModel):
    """Capabilities every request under this policy needs."""

    vision: bool = Field(False, description="Backends must support image inputs.")
    tools: bool = Field(False, description="Backends must support tool calling.")
    json_mode: bool = Field(False, description="Backends must support JSON mode.")
    min_context_length: int = Field(
        0, ge=0, le=10_000_000, description="Minimum context length in tokens; 0 for any."
    )


# Spend is a running float sum and estimates are float products, so an amount that is equal
# on paper can land a hair off (ten $0.10 reports sum to $0.9999999999999999). Amounts within
# one part per billion of each other, or one nano-dollar near zero, count as equal.
RELATIVE_TOLERANCE: Final = 1e-9
ABSOLUTE_TOLERANCE_USD: Final = 1e-9


def reaches(amount: float, threshold: float) -> bool:
    """`amount >= threshold` where equal within the tolerance counts as reached: the single
    comparison behind both inclusive budget limits and the cost cap (equal passes)."""
    return amount >= threshold or math.isclose(
        amount, threshold, rel_tol=RELATIVE_TOLERANCE, abs_tol=ABSOLUTE_TOLERANCE_USD
    )


class Budget(SpecModel):
    """Monthly spend limit for requests matched by this policy."""

    model_config = SpecModel.model_config | {"json_schema_extra": validations(BUDGET_LIMIT_RULE)}

    monthly_limit_usd: float | None = Field(
        None,
        ge=0,
        le=10_000_000,
        description="Monthly limit in USD (calendar month, UTC); required (omit `budget` for no limit). 0 blocks what hardLimitAction blocks from the start.",
    )
    soft_limit_percent: int = Field(
        75,
        ge=1,
        le=99,
        json_schema_extra=validations(SOFT_LIMIT_RULE),
        description="Utilisation in percent (1 to 99) at which Open-zone backends are de-prioritised.",
    )
    hard_limit_action: HardLimitAction = Field(
        HardLimitAction.BLOCK_CLOUD,
        description="At 100 %: warn (nothing excluded), blockCloud (Open-zone backends excluded) or blockAll (everything rejected).",
    )
    accounting: Accounting = Field(
        Accounting.REPORTED,
        description="reported: spend comes from ReportUsage; estimated: each Route adds its estimate.",
    )

    def state(self, spent_usd: float) -> BudgetState | None:
        """The budget rule, the one every caller uses (routing, status, metrics, inventory):
        HardLimit from 100 %, SoftLimit from `softLimitPercent`, both inclusive within the
        tolerance of `reaches`; None without a monthly limit (budget status is then omitted)."""
        limit = self.monthly_limit_usd
        if limit is None:
            return None
        if reaches(spent_usd, limit):
            return BudgetState.HARD_LIMIT
        if reaches(spent_usd, limit * self.soft_limit_percent / 100):
            return BudgetState.SOFT_LIMIT
        return BudgetState.NORMAL

    def nearing(self, spent_usd: float, *, fraction: float) -> bool:
        """Spend has reached `fraction` of the soft-limit threshold (so also near the hard limit);
        never without a monthly limit. The status writer flushes such policies sooner."""
        limit = self.monthly_limit_usd
        return limit is not None and spent_usd >= fraction * limit * self.soft_limit_percent / 100

    def headroom(self, spent_usd: float, *, fraction: float) -> float | None:
        """What is left before spend reaches `fraction` of the soft-limit threshold (0 past it);
        None without a monthly limit."""
        limit = self.monthly_limit_usd
        if limit is None:
            return None
        return max(0.0, fraction * limit * self.soft_limit_percent / 100 - spent_usd)


class Weights(SpecModel):
    """Weights of the smart strategy's score, in percent; they must sum to 100."""

    model_config = SpecModel.model_config | {"json_schema_extra": validations(WEIGHTS_RULE)}

    priority: int = Field(50, ge=0, le=100, description="Weight of the backend's priority.")
    load: int = Field(30, ge=0, le=100, description="Weight of the in-flight load.")
    latency: int = Field(20, ge=0, le=100, description="Weight of the latency EMA.")

    @model_validator(mode="after")
    def _sum_to_100(self) -> Weights:
        if self.priority + self.load + self.latency != 100:
            raise ValueError(WEIGHTS_RULE.message)
        return self


class Selection(SpecModel):
    """How one backend is picked among the eligible ones."""

    strategy: Strategy = Field(Strategy.SMART, description=strategy_description())
    weights: Weights = Field(
        default_factory=Weights, description="Weights of the smart strategy (sum 100)."
    )


class Quality(SpecModel):
    """Exclusion and penalties from reported outcomes."""

    enabled: bool = Field(
        True,
        description="Exclude backends whose 1-hour error rate reaches the threshold; false turns off that exclusion only.",
    )
    error_rate_threshold: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Error rate (above 0, at most 1) at which a backend is excluded.",
    )
    ttft_penalty_threshold_ms: int = Field(
        3000,
        ge=0,
        le=600_000,
        description="Time-to-first-token in ms above which smart scores are penalised; 0 disables.",
    )


class ReconcilerRef(SpecModel):
    """An extra (plug-in) reconciler, by registered name, inserted before selection."""

    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=RECONCILER_NAME_PATTERN,
        description="Registered name in the 'nexus_operator.reconcilers' entry-point group; unique per policy. A name the operator has not installed shows as ReconcilersReady=False.",
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        max_length=64,
        description="Configuration passed to the reconciler, free-form (at most 64 keys), e.g. {maxLatencyMs: 200}.",
    )


class RoutingPolicySpec(SpecModel):
    """Desired routing behaviour for the models matched by `modelPatterns`."""

    model_patterns: Annotated[list[ModelGlob], Field(max_length=64)] = Field(
        default_factory=list,
        json_schema_extra=LIST_SET,
        description="Globs ('*', '?', '[..]', '{a,b}') matched against the resolved model (at most 64, no duplicates).",
    )
    precedence: int = Field(
        1000,
        ge=0,
        le=10000,
        description="0 to 10000; lower wins when several policies match, ties go to the longest literal prefix, then name.",
    )
    backend_selector: LabelSelector | None = Field(
        None, description="Backends in scope; all Backends in the namespace when absent."
    )
    privacy: Privacy = Field(
        Privacy.UNRESTRICTED,
        description="unrestricted, or restricted: every Open-zone backend is excluded.",
    )
    min_tier: int = Field(
        1,
        ge=1,
        le=5,
        json_schema_extra=validations(MIN_TIER_RULE),
        description="Backends below this tier (1 to 5) are excluded, always.",
    )
    required_capabilities: RequiredCapabilities = Field(
        default_factory=RequiredCapabilities, description="Capabilities every request needs."
    )
    aliases: dict[AliasName, ModelName] = Field(
        default_factory=dict,
        max_length=128,
        json_schema_extra=validations(ALIASES_RULE),
        description="Model name aliases (name: target), merged namespace-wide; at most 3 hops are followed.",
    )
    fallbacks: Annotated[list[ModelName], Field(max_length=16)] = Field(
        default_factory=list,
        description="Models tried in order when the primary is Rejected (never when Queued).",
    )
    fallback_allowed: bool = Field(True, description="Set false to never try fallbacks.")
    budget: Budget | None = Field(None, description="Monthly budget; no budget when absent.")
    max_cost_per_request_usd: float | None = Field(
        None,
        ge=0,
        le=100_000,
        description="Candidates whose cost estimate in USD exceeds this are excluded.",
    )
    selection: Selection = Field(default_factory=Selection, description="Selection strategy.")
    quality: Quality = Field(default_factory=Quality, description="Quality settings.")
    reconcilers: Annotated[list[ReconcilerRef], Field(max_length=16)] = Field(
        default_factory=list,
        json_schema_extra=list_map("name"),
        description="Extra reconcilers inserted before selection, in order (at most 16, names unique).",
    )

    @field_validator("model_patterns")
    @classmethod
    def _unique_patterns(cls, patterns: list[str]) -> list[str]:
        if len(patterns) != len(set(patterns)):
            raise ValueError("`modelPatterns` must not repeat a pattern")
        return patterns

    @field_validator("model_patterns")
    @classmethod
    def _patterns_translate(cls, patterns: list[str]) -> list[str]:
        """Routing compiles with the same translation, so what passes here always compiles."""
        for index, pattern in enumerate(patterns):
            try:
                translate(pattern)
            except GlobError as error:
                raise ValueError(f"`modelPatterns[{index}]` {pattern!r}: {error}") from None
        return patterns

    @field_validator("budget")
    @classmethod
    def _budget_has_limit(cls, budget: Budget | None) -> Budget | None:
        """Budget() alone (no limit) stays constructible; a spec's budget must set one."""
        if budget is not None and budget.monthly_limit_usd is None:
            raise ValueError(BUDGET_LIMIT_RULE.message)
        return budget

    @field_validator("reconcilers")
    @classmethod
    def _unique_reconcilers(cls, reconcilers: list[ReconcilerRef]) -> list[ReconcilerRef]:
        names = [r.name for r in reconcilers]
        if len(names) != len(set(names)):
            raise ValueError("`reconcilers` must not repeat a name")
        return reconcilers

    @field_validator("aliases")
    @classmethod
    def _aliases_differ(cls, aliases: Mapping[str, str]) -> Mapping[str, str]:
        if any(name == target for name, target in aliases.items()):
            raise ValueError(ALIASES_RULE.message)
        return aliases


class BudgetState(StrEnum):
    """Budget utilisation band."""

    NORMAL = "Normal"
    SOFT_LIMIT = "SoftLimit"
    HARD_LIMIT = "HardLimit"


PERIOD_PATTERN = r"^[0-9]{4}-[0-9]{2}$"


class BudgetStatus(StatusModel):
    """Spend in the current period."""

    period: str = Field(
        max_length=7, pattern=PERIOD_PATTERN, description="Budget period, 'YYYY-MM' in UTC."
    )
    spent_usd: float = Field(0.0, ge=0, description="Spend in the period, in USD.")
    limit_usd: float | None = Field(None, ge=0, description="Monthly limit in USD.")
    utilization_percent: float = Field(
        0.0, ge=0, description="spentUsd / limitUsd in percent (may exceed 100)."
    )
    state: BudgetState = Field(BudgetState.NORMAL, description="Normal, SoftLimit or HardLimit.")
    resets_at: str | None = Field(
        None,
        max_length=TIME_MAX,
        json_schema_extra=TIMESTAMP,
        description="RFC 3339 time of the next rollover (start of next month, UTC).",
    )
    previous_period: str | None = Field(
        None, max_length=7, pattern=PERIOD_PATTERN, description="The period before this one."
    )
    previous_spent_usd: float | None = Field(
        None, ge=0, description="Spend recorded in the previous period, in USD."
    )


class PolicyExclusion(ExclusionReason):
    """Why a backend in scope is excluded by this policy whatever the request."""

    backend: str = Field(max_length=NAME_MAX, description="Name of the Backend.")


class LastRouted(StatusModel):
    """The most recent Route decision under this policy."""

    time: str = Field(
        max_length=TIME_MAX, json_schema_extra=TIMESTAMP, description="RFC 3339 time."
    )
    model: str = Field(max_length=MODEL_ID_MAX, description="Resolved model.")
    backend: str = Field(max_length=NAME_MAX, description="Selected backend.")
    reason: str = Field(max_length=MESSAGE_MAX, description="Route reason.")


class LastRejected(StatusModel):
    """The most recent Reject decision under this policy."""

    time: str = Field(
        max_length=TIME_MAX, json_schema_extra=TIMESTAMP, description="RFC 3339 time."
    )
    model: str = Field(max_length=MODEL_ID_MAX, description="Requested model.")
    reasons: Annotated[
        list[Annotated[str, Field(max_length=MESSAGE_MAX)]], Field(max_length=16)
    ] = Field(default_factory=list, description="Rejection reasons (at most 16).")


class DecisionCounters(StatusModel):
    """Decisions made under this policy, summed over all replicas."""

    routed: int = Field(0, ge=0, description="Route decisions.")
    rejected: int = Field(0, ge=0, description="Reject decisions.")
    queued: int = Field(0, ge=0, description="Queue decisions.")
    last_routed: LastRouted | None = Field(None, description="The last routed decision.")
    last_rejected: LastRejected | None = Field(None, description="The last rejected decision.")


REPLICAS_MAX = 256
REPLICA_ID_MAX = 253


class ReplicaUsage(StatusModel):
    """One replica's own running totals, written as absolute values by that replica only.

    A retried or applied-but-unanswered write sets the same numbers again, so nothing is ever
    counted twice; the policy's `budget.spentUsd` and `decisions` are sums over these entries.
    """

    replica: str = Field(max_length=REPLICA_ID_MAX, description="Stable replica identity.")
    period: str = Field(
        max_length=7, pattern=PERIOD_PATTERN, description="Budget period of spentUsd, 'YYYY-MM'."
    )
    spent_usd: float = Field(0.0, ge=0, description="This replica's spend in the period, in USD.")
    previous_period: str | None = Field(
        None, max_length=7, pattern=PERIOD_PATTERN, description="The period before `period`."
    )
    previous_spent_usd: float | None = Field(
        None, ge=0, description="This replica's spend in previousPeriod, in USD."
    )
    routed: int = Field(0, ge=0, description="Route decisions made by this replica.")
    rejected: int = Field(0, ge=0, description="Reject decisions made by this replica.")
    queued: int = Field(0, ge=0, description="Queue decisions made by this replica.")


class RetiredDecisions(StatusModel):
    """Decision counters of replica entries folded away after a month without writes."""

    routed: int = Field(0, ge=0, description="Route decisions.")
    rejected: int = Field(0, ge=0, description="Reject decisions.")
    queued: int = Field(0, ge=0, description="Queue decisions.")


class RoutingPolicyStatus(StatusModel):
    """Observed state of a RoutingPolicy, written by the operator."""

    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation the status reflects."
    )
    conditions: Annotated[list[Condition], Field(max_length=CONDITIONS_MAX)] = Field(
        default_factory=list,
        json_schema_extra=list_map("type"),
        description="Ready, Shadowed, BudgetSoftLimit, BudgetExhausted, NoEligibleBackends and ReconcilersReady conditions.",
    )
    matched_backends: int = Field(
        0,
        ge=0,
        description="Number of Backends in scope (backendSelector, or the whole namespace) that list at least one model the modelPatterns match.",
    )
    eligible_count: int = Field(
        0, ge=0, description="Number of Backends in scope not excluded statically."
    )
    eligible_backends: Annotated[
        list[Annotated[str, Field(max_length=NAME_MAX)]], Field(max_length=100)
    ] = Field(default_factory=list, description="Backends not excluded statically (the first 100).")
    exclusions: Annotated[list[PolicyExclusion], Field(max_length=256)] = Field(
        default_factory=list,
        description="Static exclusions of in-scope Backends with reasons (at most 256).",
    )
    budget: BudgetStatus | None = Field(
        None, description="Budget spend; absent when the policy has no monthlyLimitUsd."
    )
    decisions: DecisionCounters | None = Field(None, description="Decision counters.")
    replicas: Annotated[list[ReplicaUsage], Field(max_length=REPLICAS_MAX)] = Field(
        default_factory=list,
        json_schema_extra=list_map("replica"),
        description="Per-replica running totals (spend per period, decision counters) that "
        "budget and decisions sum; each replica writes only its own entry.",
    )
    retired: RetiredDecisions | None = Field(
        None, description="Counters of replicas gone for over a month, kept in the sums."
    )

    @field_validator("conditions")
    @classmethod
    def _unique_conditions(cls, conditions: list[Condition]) -> list[Condition]:
        unique_condition_types(conditions)
        return conditions


class RoutingPolicy(SpecModel):
    """RoutingPolicy decides which Backends may serve the models it matches, and how one is picked."""

    model_config = SpecModel.model_config | {"extra": "ignore"}

    metadata: ObjectMeta
    spec: RoutingPolicySpec
    status: RoutingPolicyStatus | None = None
