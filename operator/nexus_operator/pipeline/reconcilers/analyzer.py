"""RequestAnalyzer: the candidate set — backends in scope that list the resolved model."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

from .. import stages
from ..aliases import resolve_alias
from ..intent import RoutingIntent
from ..runner import ReconcileErrorPolicy
from ..verdict import Exclusion, RejectDecision


class RequestAnalyzer:
    """Resolves aliases (when given a map) and fixes the candidate set.

    The routing engine resolves aliases before choosing a policy and hands the analyzer a plan;
    used as a library, the analyzer resolves with its own alias map and keeps the given
    candidates that list the model.
    """

    name: ClassVar[str] = stages.REQUEST_ANALYZER
    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_CLOSED
    trusted: ClassVar[bool] = True

    def __init__(self, aliases: Mapping[str, str] = MappingProxyType({})) -> None:
        self.aliases = aliases

    def reconcile(self, intent: RoutingIntent) -> None:
        if self.aliases and not self._resolve(intent):
            return
        plan = intent.plan
        if plan is not None:
            intent.start_from_plan(plan)
        else:
            model = intent.model
            intent.candidate_backends = [
                c for c in intent.candidate_backends if model in c.backend.models
            ]
        intent.trace(f"{len(intent.candidate_backends)} backend(s) offer {intent.model}")

    def _resolve(self, intent: RoutingIntent) -> bool:
        resolution = resolve_alias(intent.model, self.aliases)
        if resolution.error_code is None:
            intent.model = resolution.model
            return True
        failure = Exclusion(
            backend="",
            reconciler=self.name,
            reason_code=resolution.error_code,
            reason=resolution.message,
            suggested_action="fix the aliases so every chain ends at a model within 3 hops",
            model=intent.request_requirements.model,
        )
        intent.decision = RejectDecision(resolution.error_code, resolution.message, (failure,))
        intent.candidate_backends = []
        return False
