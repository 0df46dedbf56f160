"""BudgetReconciler: cost estimates, monthly soft/hard limits and the per-request cost cap.

Budget status is computed from spend *before* this request. A financial control, it fails
closed: if spend cannot be read the request is rejected rather than routed for free.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import ClassVar

from nexus_operator.api import Budget, BudgetState, HardLimitAction, reaches

from .. import reasons, stages
from ..intent import RoutingIntent
from ..plan import PriceBounds
from ..runner import ReconcileErrorPolicy
from ..runtime import PolicyRuntime
from ..verdict import Exclusion
from ..views import Candidate

SEED_FORM_HINT = (
    "BudgetReconciler takes a Budget, not (cost_model, monthly_limit): prices come from each "
    "Backend model's pricing (spec.models[].pricing.inputPer1k / outputPer1k), so write "
    "BudgetReconciler(Budget(monthly_limit_usd=100.0)) and put the per-1K-token prices on the "
    "Backends"
)


class BudgetReconciler:
    name: ClassVar[str] = stages.BUDGET
    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_CLOSED
    trusted: ClassVar[bool] = True

    def __init__(
        self,
        budget: Budget | None = None,
        *seed_form: object,
        max_cost_per_request_usd: float | None = None,
        spend: PolicyRuntime | None = None,
    ) -> None:
        """`budget` holds the monthly limit; prices come from each candidate's model pricing.
        The seed's `BudgetReconciler(cost_model, monthly_limit)` is refused with the way to
        write it here (`seed_form` only catches that second argument)."""
        if seed_form or not (budget is None or isinstance(budget, Budget)):
            raise TypeError(SEED_FORM_HINT)
        self.budget = budget
        self.max_cost_per_request_usd = max_cost_per_request_usd
        self.spend = spend if spend is not None else PolicyRuntime()
        # The last (budget, spend, state): spend moves only with usage, so most decisions in a
        # row read the same one (NaN, never equal, starts it empty).
        self._last: tuple[Budget | None, float, BudgetState | None] = (None, math.nan, None)

    def state(self, now: datetime) -> BudgetState | None:
        """Normal / SoftLimit / HardLimit (both limits inclusive); None without a monthly limit."""
        budget = self.budget
        if budget is None:
            return None
        spent = self.spend.spent_at(now)
        last = self._last
        if spent == last[1] and last[0] is budget:
            return last[2]
        state = budget.state(spent)
        self._last = (budget, spent, state)
        return state

    def reconcile(self, intent: RoutingIntent) -> None:
        state = self.state(intent.now)
        intent.annotations.budget_state = state
        if state is BudgetState.HARD_LIMIT:
            self._hard_limit(intent)
        elif state is BudgetState.SOFT_LIMIT:
            intent.annotations.penalize_open = True
        self._cap_cost(intent)

    def _hard_limit(self, intent: RoutingIntent) -> None:
        assert self.budget is not None
        action = self.budget.hard_limit_action
        if action is HardLimitAction.WARN:
            intent.annotations.penalize_open = True
            intent.trace("hard limit reached; warn only")
            return
        pool = intent.candidate_backends
        if action is HardLimitAction.BLOCK_CLOUD:
            plan = intent.plan
            pool = (
                intent.alive(plan.open_candidates)
                if plan
                else [c for c in pool if c.backend.is_open]
            )
        count = intent.exclude_many(
            self._hard_exclusion(c, intent.model, action=action) for c in pool
        )
        intent.trace(f"hard limit reached ({action.value}); {count} excluded")

    def _hard_exclusion(
        self, candidate: Candidate, model: str, *, action: HardLimitAction
    ) -> Exclusion:
        scope = (
            "Open-zone backends are"
            if action is HardLimitAction.BLOCK_CLOUD
            else "every backend is"
        )
        return Exclusion(
            backend=candidate.backend.name,
            reconciler=self.name,
            reason_code=reasons.BUDGET_HARD_LIMIT,
            reason=f"monthly budget exhausted: {scope} blocked ({action.value})",
            suggested_action="raise budget.monthlyLimitUsd or wait for the monthly reset",
            model=model,
        )

    def _cap_cost(self, intent: RoutingIntent) -> None:
        req = intent.request_requirements
        tokens_in, tokens_out = req.estimated_tokens, req.output_tokens
        plan = intent.plan
        bounds = plan.prices if plan is not None else PriceBounds.of(intent.candidate_backends)
        ceiling = bounds.cost(tokens_in, tokens_out)
        intent.annotations.estimated_cost = ceiling
        cap = self.max_cost_per_request_usd
        if cap is None or reaches(cap, ceiling):
            return
        over = [
            (c, cost)
            for c in intent.candidate_backends
            if not reaches(cap, cost := c.model.cost(tokens_in, tokens_out))
        ]
        intent.exclude_many(
            self._cost_exclusion(c, cost, cap=cap, model=intent.model) for c, cost in over
        )

    def _cost_exclusion(
        self, candidate: Candidate, cost: float, *, cap: float, model: str
    ) -> Exclusion:
        return Exclusion(
            backend=candidate.backend.name,
            reconciler=self.name,
            reason_code=reasons.COST_EXCEEDS_MAX,
            reason=f"estimated cost ${cost:.6f} exceeds maxCostPerRequestUsd ${cap:.6f}",
            suggested_action="send fewer tokens or raise maxCostPerRequestUsd",
            model=model,
        )
