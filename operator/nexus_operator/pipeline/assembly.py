"""The pipeline a RoutingPolicy asks for: built-ins in SPEC order, plug-ins before selection."""

from __future__ import annotations

from collections.abc import Mapping

from nexus_operator.api import RoutingPolicySpec

from .plugins import ReconcilerFactory, build_plugin
from .reconcilers import (
    BudgetReconciler,
    CapabilityReconciler,
    HealthReconciler,
    LifecycleReconciler,
    PrivacyReconciler,
    QualityReconciler,
    RequestAnalyzer,
    SelectionReconciler,
)
from .runner import Reconciler, ReconcilerPipeline
from .runtime import PolicyRuntime, RuntimeState


def build_pipeline(
    spec: RoutingPolicySpec,
    *,
    runtime: RuntimeState,
    scope: tuple[str, str | None],
    spend: PolicyRuntime | None = None,
    plugins: Mapping[str, ReconcilerFactory] | None = None,
) -> ReconcilerPipeline:
    """`scope` is (namespace, policy name or None for the defaults)."""
    stages: list[Reconciler] = [
        RequestAnalyzer(),
        LifecycleReconciler(),
        PrivacyReconciler(spec.privacy),
        BudgetReconciler(
            spec.budget, max_cost_per_request_usd=spec.max_cost_per_request_usd, spend=spend
        ),
        CapabilityReconciler(min_tier=spec.min_tier, required=spec.required_capabilities),
        QualityReconciler(spec.quality, failing=runtime.failing),
        HealthReconciler(
            not_healthy=runtime.not_healthy,
            saturated=runtime.saturated,
            credential_problems=runtime.credential_problems,
        ),
    ]
    stages.extend(build_plugin(ref.name, ref.config, factories=plugins) for ref in spec.reconcilers)
    stages.append(
        SelectionReconciler(
            spec.selection.strategy,
            spec.selection.weights,
            ttft_penalty_threshold_ms=spec.quality.ttft_penalty_threshold_ms,
            counters=runtime.round_robin,
            scope=scope,
        )
    )
    return ReconcilerPipeline(stages)
