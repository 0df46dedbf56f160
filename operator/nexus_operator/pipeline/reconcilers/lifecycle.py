"""LifecycleReconciler: a draining (cordoned) backend takes nothing new."""

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
