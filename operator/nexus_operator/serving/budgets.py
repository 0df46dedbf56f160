"""A policy's budget state from its spend, as the BudgetReconciler computes it."""

from __future__ import annotations

from ..api import BudgetState, RoutingPolicy
from ..pipeline.reconcilers.budget import budget_state as state_of_spend


def budget_state(policy: RoutingPolicy, spent_usd: float) -> BudgetState | None:
    """None when the policy has no monthly limit (budget status is then omitted)."""
    budget = policy.spec.budget
    if budget is None or budget.monthly_limit_usd is None:
        return None
    return state_of_spend(
        spent=spent_usd, limit=budget.monthly_limit_usd, soft_percent=budget.soft_limit_percent
    )
