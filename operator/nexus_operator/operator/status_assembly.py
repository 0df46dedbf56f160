"""Desired non-additive status of Backends and RoutingPolicies, assembled from plain inputs.

Pure functions: no API calls, no runtime cells, no clock of their own, so they are tested
directly. The dicts use wire (camelCase) names and contain every key the leader owns, with None
where a value is absent, so `diffing.merge_diff` can delete stale keys. The budget block and the
decision/selection counters are not here: the budget ledger owns them (they are additive).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nexus_operator import api
from nexus_operator.api import BudgetState, ConditionStatus, HealthState
from nexus_operator.api import conditions as c

from .bounds import clip
from .condition_list import DesiredCondition, set_status_condition, set_status_conditions
from .invalid_specs import InvalidSpec

JsonObject = dict[str, Any]

TRUE, FALSE, UNKNOWN = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN
ELIGIBLE_MAX = 100
EXCLUSIONS_MAX = {"Backend": 64, "RoutingPolicy": 256}


def rfc3339(moment: datetime | None) -> str | None:
    return None if moment is None else _stamp(moment)


@dataclass(frozen=True)
class BackendFacts:
    """Runtime facts about one backend, as this replica knows them."""

    health_state: HealthState
    latency_ms: float | None
    last_probe_time: datetime | None
    consecutive_failures: int
    last_error: str | None
    in_flight: int
    # CredentialsReady for a Backend with credentialsSecretRef, once its Secret was read.
    credentials: DesiredCondition | None = None


@dataclass(frozen=True)
class PolicyFacts:
    """The static evaluation of one policy plus its current spend."""

    matched_backends: int
    eligible_backends: Sequence[str]
    exclusions: Sequence[api.PolicyExclusion]
    shadowed_by: str | None = None
    alias_error: tuple[str, str] | None = None
    spent_usd: float = 0.0
    budget_state: BudgetState = BudgetState.NORMAL
    # (reason, message): the policy can never route (Ready=False with that reason).
    never_routes: tuple[str, str] | None = None
    # (reason, message): no in-scope backend lists a matching model (NoEligibleBackends).
    no_backends: tuple[str, str] | None = None
    # The plug-in names the spec lists, and (name, problem) of those that could not be built.
    plugins: Sequence[str] = ()
    plugin_problems: Sequence[tuple[str, str]] = ()


def backend_status(
    backend: api.Backend,
    facts: BackendFacts,
    *,
    exclusions: Sequence[api.BackendExclusion],
    existing: Sequence[api.Condition],
    now: datetime,
) -> JsonObject:
    generation = backend.metadata.generation
    desired = _backend_conditions(backend, facts)
    if facts.credentials is None:
        existing = [x for x in existing if x.type != c.CREDENTIALS_READY]
    conditions = set_status_conditions(
        existing, desired, observed_generation=generation, now=_stamp(now)
    )
    return {
        "observedGeneration": generation,
        "conditions": [_dump(x) for x in conditions],
        "zone": backend.spec.effective_zone.value,
        "health": {
            "state": facts.health_state.value,
            "latencyMs": None if facts.latency_ms is None else round(facts.latency_ms, 1),
            "lastProbeTime": rfc3339(facts.last_probe_time),
            "consecutiveFailures": facts.consecutive_failures,
            "lastError": clip(facts.last_error) if facts.last_error else None,
        },
        "routing": {"inFlight": facts.in_flight},
        "exclusions": [_dump(x) for x in exclusions[: EXCLUSIONS_MAX["Backend"]]],
    }


def policy_status(
    policy: api.RoutingPolicy,
    facts: PolicyFacts,
    *,
    existing: Sequence[api.Condition],
    now: datetime,
) -> JsonObject:
    generation = policy.metadata.generation
    desired = _policy_conditions(facts)
    conditions = set_status_conditions(
        existing, desired, observed_generation=generation, now=_stamp(now)
    )
    return {
        "observedGeneration": generation,
        "conditions": [_dump(x) for x in conditions],
        "matchedBackends": facts.matched_backends,
        "eligibleCount": len(facts.eligible_backends),
        "eligibleBackends": sorted(facts.eligible_backends)[:ELIGIBLE_MAX],
        "exclusions": [_dump(x) for x in facts.exclusions[: EXCLUSIONS_MAX["RoutingPolicy"]]],
    }


def invalid_spec_status(
    invalid: InvalidSpec, *, existing: Sequence[api.Condition], now: datetime
) -> JsonObject:
    """Ready=False naming the rejected field, at the rejected generation.

    Only Ready and observedGeneration. For an object the registry still serves from its last
    valid spec, the writer lays this over that spec's normal status; for one that was never
    valid, it is the whole leader-owned status.
    """
    desired = DesiredCondition(c.READY, FALSE, c.INVALID_SPEC, clip(invalid.message))
    conditions = set_status_condition(
        existing, desired, observed_generation=invalid.generation, now=_stamp(now)
    )
    return {
        "observedGeneration": invalid.generation,
        "conditions": [_dump(x) for x in conditions],
    }


def _backend_conditions(backend: api.Backend, facts: BackendFacts) -> list[DesiredCondition]:
    healthy = _healthy_condition(backend, facts)
    credentials = facts.credentials
    if backend.spec.draining:
        ready = DesiredCondition(
            c.READY, FALSE, c.DRAINING, "Backend is draining: no new requests."
        )
    elif credentials is not None and credentials.status != TRUE:
        ready = DesiredCondition(c.READY, FALSE, credentials.reason, credentials.message)
    else:
        ready = DesiredCondition(c.READY, healthy.status, healthy.reason, healthy.message)
    if ready.status == TRUE:
        ready = DesiredCondition(c.READY, TRUE, c.ACCEPTED, "Backend is in the routing registry.")
    return [ready, healthy] if credentials is None else [ready, healthy, credentials]


def _healthy_condition(backend: api.Backend, facts: BackendFacts) -> DesiredCondition:
    if not backend.spec.health_check.enabled:
        return DesiredCondition(
            c.HEALTHY, TRUE, c.HEALTH_CHECK_DISABLED, "Health checks are disabled; assumed healthy."
        )
    if facts.health_state == HealthState.HEALTHY:
        return DesiredCondition(c.HEALTHY, TRUE, c.HEALTH_CHECK_PASSED, "Health probe succeeded.")
    if facts.health_state == HealthState.UNHEALTHY:
        detail = facts.last_error or "health probe failed"
        return DesiredCondition(
            c.HEALTHY,
            FALSE,
            c.HEALTH_CHECK_FAILED,
            f"{facts.consecutive_failures} consecutive failed probes: {detail}",
        )
    return DesiredCondition(c.HEALTHY, UNKNOWN, c.HEALTH_UNKNOWN, "No probe result yet.")


def _policy_conditions(facts: PolicyFacts) -> list[DesiredCondition]:
    return [
        _ready_condition(facts),
        _shadowed_condition(facts),
        _soft_limit_condition(facts),
        _exhausted_condition(facts),
        _no_eligible_condition(facts),
        _reconcilers_condition(facts),
    ]


def _ready_condition(facts: PolicyFacts) -> DesiredCondition:
    if facts.alias_error is None:
        if facts.never_routes is not None:
            reason, message = facts.never_routes
            return DesiredCondition(c.READY, FALSE, reason, message)
        return DesiredCondition(c.READY, TRUE, c.ACCEPTED, "Policy is in the routing registry.")
    code, message = facts.alias_error
    reason = c.ALIAS_CYCLE if code == "alias_cycle" else c.ALIAS_DEPTH_EXCEEDED
    return DesiredCondition(c.READY, FALSE, reason, message)


def _shadowed_condition(facts: PolicyFacts) -> DesiredCondition:
    if facts.shadowed_by is None:
        return DesiredCondition(
            c.SHADOWED, FALSE, c.NOT_SHADOWED, "Policy can win for some models."
        )
    return DesiredCondition(
        c.SHADOWED,
        TRUE,
        c.SHADOWED_BY_POLICY,
        f"RoutingPolicy {facts.shadowed_by!r} wins for every model this policy matches.",
    )


def _soft_limit_condition(facts: PolicyFacts) -> DesiredCondition:
    if facts.budget_state == BudgetState.NORMAL:
        return DesiredCondition(c.BUDGET_SOFT_LIMIT, FALSE, c.BUDGET_WITHIN_LIMIT, "")
    return DesiredCondition(
        c.BUDGET_SOFT_LIMIT,
        TRUE,
        c.SOFT_LIMIT_REACHED,
        f"Spend ${facts.spent_usd:.2f} reached the soft limit; Open-zone backends are de-prioritised.",
    )


def _exhausted_condition(facts: PolicyFacts) -> DesiredCondition:
    if facts.budget_state != BudgetState.HARD_LIMIT:
        return DesiredCondition(c.BUDGET_EXHAUSTED, FALSE, c.BUDGET_WITHIN_LIMIT, "")
    return DesiredCondition(
        c.BUDGET_EXHAUSTED,
        TRUE,
        c.HARD_LIMIT_REACHED,
        f"Spend ${facts.spent_usd:.2f} reached the monthly limit; the hard-limit action applies.",
    )


def _no_eligible_condition(facts: PolicyFacts) -> DesiredCondition:
    if facts.eligible_backends:
        count = len(facts.eligible_backends)
        return DesiredCondition(
            c.NO_ELIGIBLE_BACKENDS, FALSE, c.ELIGIBLE_BACKENDS_FOUND, f"{count} eligible backends."
        )
    if facts.no_backends is not None:
        reason, message = facts.no_backends
        return DesiredCondition(c.NO_ELIGIBLE_BACKENDS, TRUE, reason, message)
    return DesiredCondition(
        c.NO_ELIGIBLE_BACKENDS,
        TRUE,
        c.ALL_BACKENDS_EXCLUDED,
        f"All {facts.matched_backends} backends in scope are excluded; see status.exclusions.",
    )


def _reconcilers_condition(facts: PolicyFacts) -> DesiredCondition:
    if facts.plugin_problems:
        named = "; ".join(f"{name!r}: {problem}" for name, problem in facts.plugin_problems)
        return DesiredCondition(
            c.RECONCILERS_READY,
            FALSE,
            c.RECONCILER_UNAVAILABLE,
            clip(f"Skipped on every request (plug-ins fail open): {named}"),
        )
    if not facts.plugins:
        return DesiredCondition(
            c.RECONCILERS_READY, TRUE, c.RECONCILERS_LOADED, "No plug-in reconcilers configured."
        )
    return DesiredCondition(
        c.RECONCILERS_READY,
        TRUE,
        c.RECONCILERS_LOADED,
        clip(f"Plug-in reconcilers loaded: {', '.join(facts.plugins)}."),
    )


def _dump(model: api.Condition | api.BackendExclusion | api.PolicyExclusion) -> JsonObject:
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


def _stamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")
