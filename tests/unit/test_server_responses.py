"""A RouteResponse carries exactly what its decision has, whichever way it is built."""

from __future__ import annotations

import pytest
from routing_factories import backend, engine, policy

from nexus_operator.api import BudgetState
from nexus_operator.pipeline import Exclusion
from nexus_operator.routing import Decision, Outcome, RequestRequirements
from nexus_operator.serving import responses
from nexus_operator.serving.proto import router_pb2 as pb

TIER = Exclusion("b", "TierReconciler", "tier_too_low", "tier 1 < 3", "raise", "m", 3, None)
ZONE = Exclusion("c", "PrivacyReconciler", "privacy_zone", "open", "", "m", None, "Restricted")


def every_field_set(decision: Decision) -> pb.RouteResponse:
    """The response with every field given, defaults included: what route_response replaced."""
    response = pb.RouteResponse(
        outcome=pb.Outcome.Value(f"OUTCOME_{decision.outcome.value}"),
        model=decision.model,
        reason=decision.reason,
        cost_estimate=decision.cost_estimate,
        budget_state=responses.BUDGET_STATES[decision.budget_state],
        fallback_used=decision.fallback_used,
        rejections=responses.rejections(decision.rejections),
        available_models=decision.available_models,
        policy=decision.policy or "",
        request_id=decision.request_id or "",
    )
    if decision.backend is not None:
        ref = decision.backend
        response.backend.CopyFrom(
            pb.BackendRef(
                name=ref.name,
                namespace=ref.namespace,
                url=ref.url,
                type=str(ref.type),
                zone=str(ref.zone),
                tier=ref.tier,
            )
        )
    if decision.retry_after_ms is not None:
        response.retry_after_ms = decision.retry_after_ms
    if decision.estimated_wait_ms is not None:
        response.estimated_wait_ms = decision.estimated_wait_ms
    return response


def engine_decisions() -> list[Decision]:
    eng = engine(
        [backend("a", tier=1), backend("b", tier=3, maxConcurrency=1), backend("c", tier=4)],
        [policy("private", privacy="restricted", minTier=2)],
    )
    return [
        eng.route(RequestRequirements(model="llama3:8b", request_id="r-1")),
        eng.route(RequestRequirements(model="llama3:8b", min_tier=5)),
        eng.route(RequestRequirements(model="nope")),
        eng.explain(RequestRequirements(model="llama3:8b", needs_vision=True)),
    ]


HAND_BUILT = [
    Decision(Outcome.QUEUED, "m", "all busy", retry_after_ms=0, estimated_wait_ms=0),
    Decision(
        Outcome.REJECTED,
        "m",
        "no backend",
        policy="p",
        budget_state=BudgetState.SOFT_LIMIT,
        fallback_used=True,
        rejections=[TIER, ZONE],
        available_models=["a", "b"],
        cost_estimate=0.0,
    ),
    Decision(Outcome.ROUTED, "", "", cost_estimate=-0.0, budget_state=BudgetState.NORMAL),
]


@pytest.mark.parametrize("decision", [*engine_decisions(), *HAND_BUILT])
def test_route_response_sets_the_fields_a_decision_has_and_encodes_like_setting_them_all(
    decision: Decision,
) -> None:
    for _ in range(2):  # the second renders any plan block from the cache
        built = responses.route_response(decision)
        reference = every_field_set(decision)
        assert built == reference
        assert built.SerializeToString(deterministic=True) == reference.SerializeToString(
            deterministic=True
        )
