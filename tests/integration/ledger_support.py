"""What the budget-ledger integration tests share: a budgeted policy over one unprobed Backend,
and the spend its status reports."""

from __future__ import annotations

from operator_support import Objects, backend_spec

POLICY = "budgeted"


def create_budgeted(
    objects: Objects, *, monthly_limit_usd: float, hard_limit_action: str | None = None
) -> None:
    """Backend "local" (never probed) and RoutingPolicy POLICY for every model, with a budget."""
    budget: dict[str, object] = {"monthlyLimitUsd": monthly_limit_usd}
    if hard_limit_action is not None:
        budget["hardLimitAction"] = hard_limit_action
    objects.create(
        "backends", "local", backend_spec("http://127.0.0.1:9", healthCheck={"enabled": False})
    )
    objects.create(
        "routingpolicies",
        POLICY,
        {"modelPatterns": ["*"], "budget": budget},
    )


def spent_usd(objects: Objects) -> float:
    """status.budget.spentUsd of POLICY (0 until first written)."""
    budget = objects.status("routingpolicies", POLICY).get("budget") or {}
    return float(budget.get("spentUsd") or 0.0)
