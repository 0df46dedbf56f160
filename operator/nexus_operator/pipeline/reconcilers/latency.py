"""LatencyReconciler: the seed quickstart's example plug-in — exclude slow backends.

Registered as `latency` in the `nexus_operator.reconcilers` entry-point group, so a
RoutingPolicy can ask for it with `reconcilers: [{name: latency, config: {maxLatencyMs: 200}}]`.
Backends without a latency measurement pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from .. import reasons
from ..intent import RoutingIntent
from ..runner import ReconcileError, ReconcileErrorPolicy


class LatencyReconciler:
    name: ClassVar[str] = "LatencyReconciler"
    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_OPEN

    def __init__(self, max_latency_ms: float) -> None:
        self.max_latency_ms = max_latency_ms

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LatencyReconciler:
        """Build from a RoutingPolicy's `config` map (`maxLatencyMs`)."""
        value = config.get("maxLatencyMs")
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise ReconcileError("latency: config.maxLatencyMs must be a positive number")
        return cls(float(value))

    def reconcile(self, intent: RoutingIntent) -> None:
        limit = self.max_latency_ms
        for candidate in list(intent.candidate_backends):
            latency = candidate.latency_ms
            if latency is not None and latency > limit:
                intent.exclude(
                    candidate,
                    reason_code=reasons.LATENCY_TOO_HIGH,
                    reason=f"Latency {latency:.0f}ms exceeds limit {limit:.0f}ms",
                    suggested_action="wait for the backend's latency to recover",
                    reconciler=self.name,
                )
        intent.trace(
            f"Latency: {len(intent.candidate_backends)} backends within {limit:.0f}ms limit"
        )
