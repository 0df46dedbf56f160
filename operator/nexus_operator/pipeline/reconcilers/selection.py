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
from ..strategies import PICKS, Pick, SmartWeights
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

    @property
    def strategy(self) -> Strategy:
        return self._strategy

    @strategy.setter
    def strategy(self, strategy: Strategy) -> None:
        """Looks the pick function up once, not per decision."""
        self._strategy = strategy
        self._pick_function = PICKS[strategy]

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
        return self._pick_function(intent, candidates, selector=self)

    def take_turn(self, intent: RoutingIntent) -> int:
        """The roundRobin counter advances only when a Route picks among two or more."""
        key = (*self.scope, intent.model)
        counter = self.counters.get(key, 0)
        if not intent.dry_run:
            self.counters[key] = counter + 1
        return counter
