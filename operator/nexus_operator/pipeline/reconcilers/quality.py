"""QualityReconciler: backends failing too often in the last hour are excluded.

Backends with no reports in the window pass. It fails open: losing quality data should degrade
routing, not stop it.
"""

from __future__ import annotations

from typing import ClassVar

from nexus_operator.api import Quality

from .. import reasons, stages
from ..intent import RoutingIntent
from ..plan import among
from ..runner import ReconcileErrorPolicy
from ..verdict import Exclusion
from ..views import BackendKey, Candidate


class QualityReconciler:
    name: ClassVar[str] = stages.QUALITY
    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_OPEN
    trusted: ClassVar[bool] = True

    def __init__(
        self, quality: Quality | None = None, *, failing: set[BackendKey] | None = None
    ) -> None:
        """`failing` is the runtime's set of backends with recent failures; without it every
        candidate is checked."""
        self.quality = quality or Quality()
        self.failing = failing

    def reconcile(self, intent: RoutingIntent) -> None:
        if not self.quality.enabled:
            return
        threshold = self.quality.error_rate_threshold
        now = intent.now
        over: list[tuple[Candidate, float]] = []
        for candidate in self._suspects(intent):
            rate = candidate.runtime.error_rate(now)
            if rate is not None and rate >= threshold:
                over.append((candidate, rate))
        if over:
            intent.exclude_many(
                self._exclusion(c, rate, threshold=threshold, model=intent.model)
                for c, rate in over
            )

    def _suspects(self, intent: RoutingIntent) -> list[Candidate]:
        plan = intent.plan
        if plan is None or self.failing is None:
            return intent.candidate_backends
        return intent.alive(among(self.failing, plan)) if self.failing else []

    def _exclusion(
        self, candidate: Candidate, rate: float, *, threshold: float, model: str
    ) -> Exclusion:
        return Exclusion(
            backend=candidate.backend.name,
            reconciler=self.name,
            reason_code=reasons.ERROR_RATE,
            reason=f"error rate {rate:.0%} in the last hour reaches the threshold {threshold:.0%}",
            suggested_action="investigate the backend's failures; it passes again as errors age out",
            model=model,
        )
