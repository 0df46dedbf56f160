"""SPEC §3 step 4: budget thresholds are inclusive and the cost cap lets an equal estimate pass,
also when float arithmetic lands a hair off the exact amount."""

from __future__ import annotations

from typing import Any

from routing_factories import NOW, backend, codes, engine, model, policy

from nexus_operator.api import Budget, BudgetState
from nexus_operator.operator.budget_ledger import budget_block
from nexus_operator.pipeline import BudgetReconciler, reasons
from nexus_operator.routing import RequestRequirements, RoutingEngine


def spent_in_dimes(dimes: int, **budget: Any) -> RoutingEngine:
    """A policy with a $1 limit after `dimes` usage reports of $0.10 each."""
    eng = engine([backend("a")], [policy("p", budget={"monthlyLimitUsd": 1.0, **budget})])
    spend = eng.registry.runtime.policy("default", "p")
    for _ in range(dimes):
        spend.add_spend(0.1, NOW)
    return eng


def state(eng: RoutingEngine) -> BudgetState | None:
    return eng.explain(RequestRequirements(model="llama3:8b")).budget_state


def test_ten_dimes_reach_a_one_dollar_hard_limit() -> None:
    assert state(spent_in_dimes(10)) is BudgetState.HARD_LIMIT


def test_nine_dimes_reach_a_ninety_percent_soft_limit() -> None:
    assert state(spent_in_dimes(9, softLimitPercent=90)) is BudgetState.SOFT_LIMIT


def test_a_spend_just_below_the_soft_limit_stays_normal() -> None:
    eng = spent_in_dimes(0, softLimitPercent=90)
    eng.registry.runtime.policy("default", "p").add_spend(0.8999, NOW)
    assert state(eng) is BudgetState.NORMAL


def cap_engine(*, cap: float, output_per1k: float) -> RoutingEngine:
    pricing = {"inputPer1k": 0.1, "outputPer1k": output_per1k}
    return engine(
        [backend("a", models=[model("llama3:8b", pricing=pricing)])],
        [policy("p", maxCostPerRequestUsd=cap)],
    )


def test_an_estimate_equal_to_the_cap_up_to_float_rounding_passes() -> None:
    # 1000 input tokens at $0.1/1k + 2000 output at $0.1/1k = 0.1 + 0.2 = 0.30000000000000004
    decision = cap_engine(cap=0.3, output_per1k=0.1).explain(
        RequestRequirements(model="llama3:8b", estimated_tokens=1000, max_output_tokens=2000)
    )
    assert decision.backend is not None
    assert codes(decision) == {}


def test_an_estimate_above_the_cap_is_excluded() -> None:
    decision = cap_engine(cap=0.3, output_per1k=0.1001).explain(
        RequestRequirements(model="llama3:8b", estimated_tokens=1000, max_output_tokens=2000)
    )
    assert codes(decision) == {"a": reasons.COST_EXCEEDS_MAX}


def test_routing_status_and_the_model_agree_on_the_budget_state_at_every_threshold() -> None:
    budget = Budget(monthly_limit_usd=1.0, soft_limit_percent=90)
    for dimes in range(12):
        eng = spent_in_dimes(dimes, softLimitPercent=90)
        spent = eng.registry.runtime.policy("default", "p").spent_usd
        block = budget_block(spent_usd=spent, previous=None, budget=budget, now=NOW)
        assert state(eng) is budget.state(spent)
        assert block["state"] == budget.state(spent)


def test_a_budget_without_a_monthly_limit_has_no_state() -> None:
    assert Budget().state(1e9) is None


def test_the_budget_state_follows_every_spend_change_between_decisions() -> None:
    eng = spent_in_dimes(0, softLimitPercent=90)
    spend = eng.registry.runtime.policy("default", "p")
    seen = [state(eng)]
    for amount in (0.9, 0.1, 0.0):
        spend.add_spend(amount, NOW)
        seen.append(state(eng))
    assert seen == [
        BudgetState.NORMAL,
        BudgetState.SOFT_LIMIT,
        BudgetState.HARD_LIMIT,
        BudgetState.HARD_LIMIT,
    ]


def test_a_reconciler_given_another_budget_reports_that_budgets_state() -> None:
    reconciler = BudgetReconciler(Budget(monthly_limit_usd=10.0))
    reconciler.spend.add_spend(5.0, NOW)
    assert reconciler.state(NOW) is BudgetState.NORMAL
    reconciler.budget = Budget(monthly_limit_usd=5.0)
    assert reconciler.state(NOW) is BudgetState.HARD_LIMIT
