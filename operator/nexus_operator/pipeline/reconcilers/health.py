"""HealthReconciler: only backends with a usable credential, Healthy, below their concurrency cap.

A backend whose credentialsSecretRef yields no credential (Secret or key missing, empty, not
readable) is excluded first, with `credentials_unavailable`: its probes would fail on 401 too,
and the missing Secret is what the operator has to fix.

Health is checked before capacity so that a backend that is both down and full is recorded as
down: only capacity-only exclusions may turn a rejection into a Queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from nexus_operator.api import HealthState

from .. import reasons, stages
from ..intent import RoutingIntent
from ..plan import among
from ..runner import ReconcileErrorPolicy
from ..verdict import Exclusion
from ..views import BackendKey, Candidate


class HealthReconciler:
    name: ClassVar[str] = stages.HEALTH
    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_CLOSED
    trusted: ClassVar[bool] = True

    def __init__(
        self,
        *,
        not_healthy: set[BackendKey] | None = None,
        saturated: set[BackendKey] | None = None,
        credential_problems: Mapping[BackendKey, str] | None = None,
    ) -> None:
        """`not_healthy`, `saturated` and `credential_problems` are the runtime's backends not
        Healthy, at their cap, and without a usable credential; without them every candidate is
        checked."""
        self.not_healthy = not_healthy
        self.saturated = saturated
        self.credential_problems = credential_problems

    def reconcile(self, intent: RoutingIntent) -> None:
        model = intent.model
        problems = self.credential_problems
        if problems is None or problems:
            keys = None if problems is None else set(problems)
            locked = [c for c in self._suspects(intent, keys) if c.runtime.credentials_problem]
            if locked:
                intent.exclude_many(credentials_exclusion(c, model) for c in locked)
                intent.trace(f"{len(locked)} without usable credentials")
        down = [
            c
            for c in self._suspects(intent, self.not_healthy)
            if c.runtime.health_state is not HealthState.HEALTHY
        ]
        excluded = intent.exclude_many(health_exclusion(c, model) for c in down) if down else 0
        full = [c for c in self._suspects(intent, self.saturated) if _at_capacity(c)]
        if full:
            excluded += intent.exclude_for_capacity(
                (c, _capacity_exclusion(c, model)) for c in full
            )
        if excluded:
            intent.trace(f"{len(down)} not healthy, {len(full)} at capacity")

    @staticmethod
    def _suspects(intent: RoutingIntent, keys: set[BackendKey] | None) -> list[Candidate]:
        plan = intent.plan
        if plan is None or keys is None:
            return intent.candidate_backends
        return intent.alive(among(keys, plan)) if keys else []


def credentials_exclusion(candidate: Candidate, model: str) -> Exclusion:
    return Exclusion(
        backend=candidate.backend.name,
        reconciler=stages.HEALTH,
        reason_code=reasons.CREDENTIALS_UNAVAILABLE,
        reason=f"credentials unavailable: {candidate.runtime.credentials_problem}",
        suggested_action="create or fix the Secret named by spec.credentialsSecretRef",
        model=model,
    )


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
