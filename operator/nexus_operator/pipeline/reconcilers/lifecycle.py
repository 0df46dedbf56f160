"""LifecycleReconciler: a draining (cordoned) backend takes nothing new, and a request that may
only go to some backends (the gateway's subset hint) goes nowhere else."""

from __future__ import annotations

from typing import ClassVar

from .. import reasons, stages
from ..intent import RoutingIntent
from ..runner import ReconcileErrorPolicy
from ..verdict import Exclusion
from ..views import Candidate


class LifecycleReconciler:
    name: ClassVar[str] = stages.LIFECYCLE
    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_CLOSED
    trusted: ClassVar[bool] = True

    def static_exclusion(self, candidate: Candidate) -> Exclusion | None:
        if not candidate.backend.draining:
            return None
        return Exclusion(
            backend=candidate.backend.name,
            reconciler=self.name,
            reason_code=reasons.DRAINING,
            reason="backend is draining",
            suggested_action="set spec.draining to false when maintenance is over",
            model=candidate.model.id,
        )

    def reconcile(self, intent: RoutingIntent) -> None:
        intent.apply_static(self)
        only = intent.request_requirements.only_backends
        if only is not None:
            outside = intent.exclude_many(
                Exclusion(
                    backend=c.backend.name,
                    reconciler=self.name,
                    reason_code=reasons.OUTSIDE_SUBSET_HINT,
                    reason="the proxy's subset hint does not include this backend's endpoint",
                    suggested_action="widen the subset the gateway sends, or add a backend in it",
                    model=intent.model,
                )
                for c in intent.candidate_backends
                if c.backend.name not in only
            )
            if outside:
                intent.trace(f"{outside} backend(s) outside the subset hint")
