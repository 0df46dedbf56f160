"""HealthReconciler: only Healthy backends below their concurrency cap.

Health is checked before capacity so that a backend that is both down and full is recorded as
down: only capacity-only exclusions may turn a rejection into a Queue.
"""

from __future__ import annotations

from typing import ClassVar

from nexus_operator.api import HealthState

from .. import reasons, stages
from ..decision import Exclusion
from ..intent import RoutingIntent
from ..pipeline import ReconcileErrorPolicy
from ..views import BackendKey, Candidate


class HealthReconciler:
    name: ClassVar[str] = stages.HEALTH
    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_CLOSED
    trusted: ClassVar[bool] = True

    def __init__(self, *, not_healthy: set[BackendKey] | None = None) -> None:
        """`not_healthy` is the runtime's set of backends not Healthy; without it every
        candidate is checked."""
        self.not_healthy = not_healthy

    def reconcile(self, intent: RoutingIntent) -> None:
        model = intent.model
        down = [
            c for c in self._suspects(intent) if c.runtime.health_state is not HealthState.HEALTHY
        ]
        excluded = intent.exclude_many(health_exclusion(c, model) for c in down)
        plan = intent.plan
        pool = intent.alive(plan.capped) if plan is not None else intent.candidate_backends
        full = [c for c in pool if _at_capacity(c)]
        excluded += intent.exclude_many(_capacity_exclusion(c, model) for c in full)
        if excluded:
            intent.trace(f"{len(down)} not healthy, {len(full)} at capacity")

    def _suspects(self, intent: RoutingIntent) -> list[Candidate]:
        plan = intent.plan
        if plan is None or self.not_healthy is None:
            return intent.candidate_backends
        keys = self.not_healthy & plan.keys
        if not keys:
            return []
        return intent.alive(plan.by_key[k] for k in sorted(keys))


def _at_capacity(candidate: Candidate) -> bool:
    cap = candidate.backend.max_concurrency
    return cap is not None and candidate.runtime.in_flight >= cap


def health_exclusion(candidate: Candidate, model: str) -> Exclusion:
    state = candidate.runtime.health_state
    unknown = state is HealthState.UNKNOWN
    return Exclusion(
        backend=candidate.backend.name,
        reconciler=stages.HEALTH,
        reason_code=reasons.HEALTH_UNKNOWN if unknown else reasons.UNHEALTHY,
        reason="health not known yet (awaiting the first probe)"
        if unknown
        else f"backend is Unhealthy: {candidate.runtime.last_error or 'probes failing'}",
        suggested_action="wait for the first health probe"
        if unknown
        else "check the backend's health endpoint",
        model=model,
    )


def _capacity_exclusion(candidate: Candidate, model: str) -> Exclusion:
    return Exclusion(
        backend=candidate.backend.name,
        reconciler=stages.HEALTH,
        reason_code=reasons.AT_CAPACITY,
        reason=f"{candidate.runtime.in_flight} requests in flight reach maxConcurrency "
        f"{candidate.backend.max_concurrency}",
        suggested_action="retry shortly, or raise maxConcurrency",
        model=model,
    )
