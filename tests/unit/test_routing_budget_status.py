"""SPEC §5: a decision carries the matched policy's budget status whenever the policy has a
monthly limit — also when the Budget stage never ran for it."""

from __future__ import annotations

from routing_factories import NOW, backend, engine, policy

from nexus_operator.api import BudgetState
from nexus_operator.pipeline import reasons
from nexus_operator.routing import Outcome, RequestRequirements, RoutingEngine

LIMITED = {"monthlyLimitUsd": 10.0}


def spent(eng: RoutingEngine, usd: float) -> RoutingEngine:
    eng.registry.runtime.policy("default", "p").add_spend(usd, NOW)
    return eng


def test_reject_before_the_budget_stage_carries_the_budget_status() -> None:
    eng = spent(engine([backend("a", draining=True)], [policy("p", budget=LIMITED)]), 8.0)
    decision = eng.route(RequestRequirements(model="llama3:8b"))
    assert decision.outcome is Outcome.REJECTED
    assert decision.budget_state is BudgetState.SOFT_LIMIT


def test_model_not_found_under_a_limited_policy_carries_the_budget_status() -> None:
    eng = spent(engine([backend("a")], [policy("p", budget=LIMITED)]), 10.0)
    decision = eng.explain(RequestRequirements(model="unknown"))
    assert decision.reason == reasons.MODEL_NOT_FOUND
    assert decision.budget_state is BudgetState.HARD_LIMIT


def test_reject_under_a_policy_without_a_limit_has_no_budget_status() -> None:
    eng = engine([backend("a", draining=True)], [policy("p")])
    decision = eng.route(RequestRequirements(model="llama3:8b"))
    assert decision.outcome is Outcome.REJECTED
    assert decision.budget_state is None
