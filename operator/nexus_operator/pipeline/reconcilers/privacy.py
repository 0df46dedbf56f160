"""PrivacyReconciler: a restricted policy or request keeps data in Restricted zones.

A request may tighten the policy's privacy, never loosen it.
"""

from __future__ import annotations

from typing import ClassVar

from nexus_operator.api import Privacy, Zone

from .. import reasons, stages
from ..intent import RoutingIntent
from ..runner import ReconcileErrorPolicy
from ..verdict import Exclusion
from ..views import Candidate


class PrivacyReconciler:
    name: ClassVar[str] = stages.PRIVACY
    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_CLOSED
    trusted: ClassVar[bool] = True

    def __init__(self, privacy: Privacy = Privacy.UNRESTRICTED) -> None:
        self.privacy = privacy

    def static_exclusion(self, candidate: Candidate) -> Exclusion | None:
        if self.privacy is Privacy.RESTRICTED and candidate.backend.is_open:
            return open_zone_exclusion(candidate, model=candidate.model.id)
        return None

    def reconcile(self, intent: RoutingIntent) -> None:
        excluded = intent.apply_static(self)
        if self.privacy is Privacy.UNRESTRICTED and (
            intent.request_requirements.privacy is Privacy.RESTRICTED
        ):
            pool = intent.plan.open_candidates if intent.plan else intent.candidate_backends
            excluded += intent.exclude_many(
                open_zone_exclusion(c, model=intent.model)
                for c in intent.alive(pool)
                if c.backend.is_open
            )
        if excluded:
            intent.trace(f"{excluded} Open-zone backend(s) excluded")


def open_zone_exclusion(candidate: Candidate, *, model: str) -> Exclusion:
    return Exclusion(
        backend=candidate.backend.name,
        reconciler=stages.PRIVACY,
        reason_code=reasons.PRIVACY_ZONE,
        reason="privacy is restricted and the backend's zone is Open",
        suggested_action="use a Restricted-zone backend, or relax the policy's privacy",
        model=model,
        privacy_zone_required=Zone.RESTRICTED.value,
    )
