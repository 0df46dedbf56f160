"""SelectionReconciler: picks one backend among the remaining candidates.

It must run last. With exactly one candidate the reason is `only_candidate` whatever the
strategy. The roundRobin counter advances only when a Route picks among two or more.
"""

from __future__ import annotations

import random
from typing import ClassVar

from nexus_operator.api import Strategy, Weights

from .. import reasons, stages
from ..intent import RoutingIntent
from ..runner import ReconcileErrorPolicy
from ..strategies import (
    Pick,
    SmartWeights,
    pick_least_latency,
    pick_priority,
    pick_random,
    pick_round_robin,
    pick_smart,
)
from ..verdict import RouteDecision
from ..views import Candidate

CounterKey = tuple[str, str | None, str]


class SelectionReconciler:
    name: ClassVar[str] = stages.SELECTION
    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_CLOSED
    trusted: ClassVar[bool] = True

    def __init__(
        self,
        strategy: Strategy = Strategy.SMART,
        weights: Weights | None = None,
        *,
        ttft_penalty_threshold_ms: int = 3000,
        counters: dict[CounterKey, int] | None = None,
        scope: tuple[str, str | None] = ("", None),
        rng: random.Random | None = None,
    ) -> None:
        """`counters` holds roundRobin positions per (namespace, policy, model) and outlives
        this object (it is rebuilt with every snapshot); `scope` is (namespace, policy)."""
        w = weights or Weights()
        self.strategy = strategy
        self.weights = SmartWeights(priority=w.priority, load=w.load, latency=w.latency)
        self.ttft_penalty_threshold_ms = ttft_penalty_threshold_ms
        self.counters = counters if counters is not None else {}
        self.scope = scope
        self.rng = rng or random.Random()

    def reconcile(self, intent: RoutingIntent) -> None:
        candidates = intent.candidate_backends
        if not candidates:
            return
        if len(candidates) == 1:
            pick = Pick(candidates[0], reasons.ONLY_CANDIDATE)
        else:
            pick = self._pick(intent, candidates)
        req = intent.request_requirements
        cost = pick.candidate.model.cost(req.estimated_tokens, req.output_tokens)
        intent.annotations.estimated_cost = cost
        intent.decision = RouteDecision(pick.candidate, pick.reason, cost)
        intent.trace(f"selected {pick.candidate.backend.name}")

    def _pick(self, intent: RoutingIntent, candidates: list[Candidate]) -> Pick:
        strategy = self.strategy
        if strategy is Strategy.SMART:
            return pick_smart(
                self._by_priority(intent, candidates),
                intent.excluded_names,
                self.weights,
                penalize_open=intent.annotations.penalize_open,
                ttft_threshold_ms=self.ttft_penalty_threshold_ms,
            )
        if strategy is Strategy.PRIORITY_ONLY:
            return pick_priority(self._by_priority(intent, candidates), intent.excluded_names)
        if strategy is Strategy.ROUND_ROBIN:
            return self._round_robin(intent, candidates)
        if strategy is Strategy.RANDOM:
            return pick_random(candidates, self.rng)
        return pick_least_latency(_by_name(intent, candidates))

    def _round_robin(self, intent: RoutingIntent, candidates: list[Candidate]) -> Pick:
        key = (*self.scope, intent.model)
        counter = self.counters.get(key, 0)
        pick = pick_round_robin(_by_name(intent, candidates), counter)
        if not intent.dry_run:
            self.counters[key] = counter + 1
        return pick

    @staticmethod
    def _by_priority(
        intent: RoutingIntent, candidates: list[Candidate]
    ) -> tuple[Candidate, ...] | list[Candidate]:
        plan = intent.plan
        if plan is not None:
            return plan.by_priority
        return sorted(candidates, key=lambda c: (c.backend.priority, c.backend.name))


def _by_name(intent: RoutingIntent, candidates: list[Candidate]) -> list[Candidate]:
    """Plans keep candidates in name order; library callers may pass any order."""
    if intent.plan is not None:
        return candidates
    return sorted(candidates, key=lambda c: c.backend.name)
