"""Condition upkeep, merge-patch diffing and status assembly of the operator (no API server)."""

from __future__ import annotations

from datetime import UTC, datetime

from nexus_operator import api
from nexus_operator.api import ConditionStatus, HealthState
from nexus_operator.api.base import MESSAGE_MAX
from nexus_operator.operator.condition_list import DesiredCondition, set_status_condition
from nexus_operator.operator.diffing import merge_diff
from nexus_operator.operator.invalid_specs import InvalidSpec
from nexus_operator.operator.status_assembly import (
    BackendFacts,
    PolicyFacts,
    backend_status,
    invalid_spec_status,
    policy_status,
)

T0 = "2026-01-01T00:00:00Z"
NOW = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)


def _condition(status: ConditionStatus, *, reason: str = "Accepted") -> api.Condition:
    return api.Condition(type="Ready", status=status, reason=reason, last_transition_time=T0)


def _backend(**spec: object) -> api.Backend:
    return api.Backend.model_validate(
        {
            "metadata": {"name": "local", "namespace": "ns", "generation": 3},
            "spec": {"type": "ollama", "url": "http://127.0.0.1:1", **spec},
        }
    )


def _policy() -> api.RoutingPolicy:
    return api.RoutingPolicy.model_validate(
        {"metadata": {"name": "rp", "namespace": "ns", "generation": 2}, "spec": {}}
    )


def _facts(state: HealthState, **overrides: object) -> BackendFacts:
    values: dict[str, object] = {
        "health_state": state,
        "latency_ms": 12.345,
        "last_probe_time": NOW,
        "consecutive_failures": 0,
        "last_error": None,
        "in_flight": 0,
    }
    values.update(overrides)
    return BackendFacts(**values)  # type: ignore[arg-type]


def _by_type(status: dict[str, object]) -> dict[str, dict[str, str]]:
    conditions = status["conditions"]
    assert isinstance(conditions, list)
    return {c["type"]: c for c in conditions}


def test_condition_keeps_transition_time_while_status_holds() -> None:
    desired = DesiredCondition("Ready", ConditionStatus.TRUE, "Accepted", "new message")
    [kept] = set_status_condition(
        [_condition(ConditionStatus.TRUE)],
        desired,
        observed_generation=4,
        now="2026-02-02T00:00:00Z",
    )
    assert (kept.last_transition_time, kept.message, kept.observed_generation) == (
        T0,
        "new message",
        4,
    )


def test_condition_moves_transition_time_when_status_flips() -> None:
    desired = DesiredCondition("Ready", ConditionStatus.FALSE, "Draining")
    [flipped] = set_status_condition(
        [_condition(ConditionStatus.TRUE)],
        desired,
        observed_generation=1,
        now="2026-02-02T00:00:00Z",
    )
    assert flipped.last_transition_time == "2026-02-02T00:00:00Z"
    assert flipped.reason == "Draining"


def test_condition_of_a_new_type_is_appended_after_existing_ones() -> None:
    desired = DesiredCondition("Healthy", ConditionStatus.UNKNOWN, "AwaitingFirstProbe")
    result = set_status_condition(
        [_condition(ConditionStatus.TRUE)], desired, observed_generation=None, now=T0
    )
    assert [c.type for c in result] == ["Ready", "Healthy"]


def test_merge_diff_is_empty_when_nothing_changed() -> None:
    observed = {"health": {"state": "Healthy", "latencyMs": 3.0}, "conditions": [{"type": "Ready"}]}
    desired = {"health": {"state": "Healthy", "latencyMs": 3.0, "lastError": None}}
    assert merge_diff(observed, desired) == {}


def test_merge_diff_never_touches_keys_it_does_not_own() -> None:
    observed = {"budget": {"spentUsd": 5.0}, "routing": {"selectedTotal": 9, "inFlight": 1}}
    assert merge_diff(observed, {"routing": {"inFlight": 2}}) == {"routing": {"inFlight": 2}}


def test_merge_diff_deletes_owned_keys_that_became_absent() -> None:
    observed = {"health": {"state": "Unhealthy", "lastError": "HTTP 503"}}
    desired = {"health": {"state": "Healthy", "lastError": None}}
    assert merge_diff(observed, desired) == {"health": {"state": "Healthy", "lastError": None}}


def test_merge_diff_sends_changed_lists_whole() -> None:
    observed = {"exclusions": [{"policy": "a"}, {"policy": "b"}]}
    assert merge_diff(observed, {"exclusions": [{"policy": "b"}]}) == {
        "exclusions": [{"policy": "b"}]
    }


def test_unhealthy_backend_is_not_ready_and_names_the_probe_error() -> None:
    facts = _facts(HealthState.UNHEALTHY, consecutive_failures=3, last_error="HTTP 503")
    status = backend_status(_backend(), facts, exclusions=[], existing=[], now=NOW)
    conditions = _by_type(status)
    assert conditions["Healthy"]["status"] == "False"
    assert conditions["Healthy"]["reason"] == "HealthCheckFailed"
    assert "HTTP 503" in conditions["Healthy"]["message"]
    assert conditions["Ready"]["status"] == "False"
    assert status["health"] == {
        "state": "Unhealthy",
        "latencyMs": 12.3,
        "lastProbeTime": "2026-03-14T12:00:00Z",
        "consecutiveFailures": 3,
        "lastError": "HTTP 503",
    }


def test_backend_without_health_checks_is_healthy_with_reason_health_check_disabled() -> None:
    backend = _backend(healthCheck={"enabled": False})
    status = backend_status(
        backend, _facts(HealthState.HEALTHY), exclusions=[], existing=[], now=NOW
    )
    assert _by_type(status)["Healthy"]["reason"] == "HealthCheckDisabled"
    assert _by_type(status)["Ready"]["status"] == "True"


def test_draining_backend_is_not_ready_even_when_healthy() -> None:
    status = backend_status(
        _backend(draining=True), _facts(HealthState.HEALTHY), exclusions=[], existing=[], now=NOW
    )
    assert _by_type(status)["Ready"]["reason"] == "Draining"
    assert status["observedGeneration"] == 3
    assert status["zone"] == "Restricted"


def test_policy_with_every_backend_excluded_reports_no_eligible_backends() -> None:
    exclusion = api.PolicyExclusion(
        backend="cloud",
        reconciler="PrivacyReconciler",
        reason_code="privacy_zone",
        reason="Open zone",
        suggested_action="use a Restricted backend",
    )
    facts = PolicyFacts(matched_backends=1, eligible_backends=[], exclusions=[exclusion])
    status = policy_status(_policy(), facts, existing=[], now=NOW)
    assert _by_type(status)["NoEligibleBackends"]["status"] == "True"
    assert status["exclusions"] == [
        {
            "backend": "cloud",
            "reconciler": "PrivacyReconciler",
            "reasonCode": "privacy_zone",
            "reason": "Open zone",
            "suggestedAction": "use a Restricted backend",
        }
    ]
    assert (status["matchedBackends"], status["eligibleCount"]) == (1, 0)


def test_shadowed_policy_names_the_policy_that_wins() -> None:
    facts = PolicyFacts(
        matched_backends=2, eligible_backends=["a", "b"], exclusions=[], shadowed_by="catch-all"
    )
    conditions = _by_type(policy_status(_policy(), facts, existing=[], now=NOW))
    assert conditions["Shadowed"]["status"] == "True"
    assert "catch-all" in conditions["Shadowed"]["message"]
    assert conditions["NoEligibleBackends"]["status"] == "False"


def test_hard_limit_sets_both_budget_conditions() -> None:
    facts = PolicyFacts(
        matched_backends=1,
        eligible_backends=["a"],
        exclusions=[],
        spent_usd=10.0,
        budget_state=api.BudgetState.HARD_LIMIT,
    )
    conditions = _by_type(policy_status(_policy(), facts, existing=[], now=NOW))
    assert conditions["BudgetSoftLimit"]["status"] == "True"
    assert conditions["BudgetExhausted"]["reason"] == "HardLimitReached"


INVALID = InvalidSpec(
    kind="RoutingPolicy",
    namespace="ns",
    name="rp",
    generation=7,
    uid="uid-1",
    message="spec.selection.weights: priority + load + latency must sum to 100",
)


def test_invalid_spec_sets_ready_false_with_the_field_at_the_rejected_generation() -> None:
    status = invalid_spec_status(INVALID, existing=[], now=NOW)
    assert status["observedGeneration"] == 7
    assert _by_type(status)["Ready"] == {
        "type": "Ready",
        "status": "False",
        "reason": "InvalidSpec",
        "message": INVALID.message,
        "lastTransitionTime": "2026-03-14T12:00:00Z",
        "observedGeneration": 7,
    }


def test_invalid_spec_leaves_other_conditions_and_their_transition_times_alone() -> None:
    healthy = api.Condition(
        type="Healthy",
        status=ConditionStatus.TRUE,
        reason="HealthCheckPassed",
        last_transition_time=T0,
        observed_generation=6,
    )
    existing = [_condition(ConditionStatus.TRUE), healthy]
    status = invalid_spec_status(INVALID, existing=existing, now=NOW)
    conditions = _by_type(status)
    assert list(conditions) == ["Ready", "Healthy"]
    assert conditions["Healthy"] == healthy.model_dump(by_alias=True, mode="json")
    assert conditions["Ready"]["lastTransitionTime"] == "2026-03-14T12:00:00Z"
    assert set(status) == {"observedGeneration", "conditions"}


def test_invalid_spec_held_across_flushes_keeps_its_transition_time() -> None:
    held = _condition(ConditionStatus.FALSE, reason="InvalidSpec")
    status = invalid_spec_status(INVALID, existing=[held], now=NOW)
    assert _by_type(status)["Ready"]["lastTransitionTime"] == T0


def test_invalid_spec_message_is_cut_to_the_status_bound() -> None:
    long = InvalidSpec("Backend", "ns", "b", 1, None, "spec.url: " + "x" * 5000)
    [ready] = invalid_spec_status(long, existing=[], now=NOW)["conditions"]
    assert len(ready["message"]) == MESSAGE_MAX
