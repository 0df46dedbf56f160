"""Every example of the seed quickstart (seed-quickstart.md), translated to Python and run."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest
from routing_factories import backend, model, registry

from nexus_operator.api import Backend, Budget, Privacy, Strategy, Weights
from nexus_operator.pipeline import (
    BudgetReconciler,
    Candidate,
    CapabilityReconciler,
    LatencyReconciler,
    PrivacyReconciler,
    ReconcileErrorPolicy,
    ReconcilerPipeline,
    RouteDecision,
    RoutingIntent,
    SelectionReconciler,
)
from nexus_operator.routing import ModelNotFound, RequestRequirements, Router, RoutingEngine

PRICED = {"inputPer1k": 0.03, "outputPer1k": 0.03}


def fleet() -> list[Backend]:
    return [
        backend("ollama-1", priority=10),
        backend("ollama-2", priority=20, models=[model("llama3:8b", supportsVision=True)]),
        backend(
            "openai",
            type="openai",
            priority=0,
            models=[model("llama3:8b", pricing=PRICED, supportsVision=True)],
        ),
    ]


def requirements(**kw: object) -> RequestRequirements:
    fields: dict[str, object] = {"model": "llama3:8b", "estimated_tokens": 1000}
    fields.update(kw)
    return RequestRequirements(**fields)  # type: ignore[arg-type]


def with_latency(reg: object, **latencies: float) -> None:
    for name, value in latencies.items():
        reg.runtime.backend("default", name).latency_ms = value  # type: ignore[attr-defined]


# "2. Using the Router (No Changes!)"


def test_router_selects_a_backend_with_a_route_reason() -> None:
    router = Router(registry(fleet()), Strategy.SMART, Weights())
    result = router.select_backend(
        RequestRequirements(
            model="llama3:8b",
            estimated_tokens=1000,
            needs_vision=False,
            needs_tools=False,
            needs_json_mode=False,
        )
    )
    assert (result.backend.name, result.route_reason) == ("openai", "highest_score:openai:100.0")


async def test_router_async_twin_gives_the_same_answer() -> None:
    router = Router(registry(fleet()), Strategy.PRIORITY_ONLY, Weights())
    result = await router.select_backend_async(requirements())
    assert result.route_reason == "priority:openai:0"


# "3. Understanding RoutingIntent"


async def test_intent_annotations_after_pipeline_execution() -> None:
    intent = RoutingIntent(requirements(), [Candidate.of(b, "llama3:8b") for b in fleet()])
    pipeline = ReconcilerPipeline(
        [PrivacyReconciler(Privacy.RESTRICTED), BudgetReconciler(), SelectionReconciler()]
    )
    await pipeline.execute(intent)
    assert intent.annotations.privacy_excluded == {
        "openai": "privacy is restricted and the backend's zone is Open"
    }
    assert any(
        line.startswith("✓ PrivacyReconciler: 3→2") for line in intent.annotations.trace_info
    )
    assert intent.annotations.estimated_cost == 0.0
    assert isinstance(intent.decision, RouteDecision)


# "Creating a Custom Reconciler" — the LatencyReconciler of the quickstart ships as a plug-in.


def test_latency_reconciler_declares_fail_open_and_its_name() -> None:
    reconciler = LatencyReconciler(200)
    assert (reconciler.name, reconciler.error_policy) == (
        "LatencyReconciler",
        ReconcileErrorPolicy.FAIL_OPEN,
    )


def test_latency_reconciler_filters_backends_over_the_limit_and_traces() -> None:
    reg = registry(fleet())
    with_latency(reg, **{"ollama-1": 150.0, "ollama-2": 350.0})
    views = reg.snapshot.namespace("default").backends
    candidates = [
        Candidate.of(views[n], "llama3:8b", runtime=reg.runtime.backend("default", n))
        for n in ("ollama-1", "ollama-2")
    ]
    intent = RoutingIntent(requirements(), candidates)
    LatencyReconciler(200).reconcile(intent)
    assert [c.name for c in intent.candidate_backends] == ["ollama-1"]
    assert intent.annotations.excluded_by("LatencyReconciler") == {
        "ollama-2": "Latency 350ms exceeds limit 200ms"
    }
    assert intent.annotations.trace_info == [
        "✓ : 1→1 candidates (Latency: 1 backends within 200ms limit)"
    ]


# "Step 3: Add to Pipeline"


def test_custom_pipeline_with_the_latency_reconciler_through_router_with_pipeline() -> None:
    reg = registry(fleet())
    with_latency(reg, openai=900.0, **{"ollama-1": 150.0, "ollama-2": 50.0})
    pipeline = ReconcilerPipeline(
        [
            PrivacyReconciler(Privacy.UNRESTRICTED),
            BudgetReconciler(Budget(monthly_limit_usd=100.0)),
            LatencyReconciler(200),
            CapabilityReconciler(),
            SelectionReconciler(Strategy.SMART, Weights()),
        ]
    )
    result = Router.with_pipeline(reg, pipeline).select_backend(requirements())
    assert result.backend.name == "ollama-1"
    assert result.annotations.excluded_by("LatencyReconciler") == {
        "openai": "Latency 900ms exceeds limit 200ms"
    }


# "Common Patterns"


class RetainingReconciler:
    """Pattern 1 (retain) and Pattern 3 (recording exclusions) exactly as the seed writes them."""

    name: ClassVar[str] = "RetainingReconciler"
    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_OPEN

    def reconcile(self, intent: RoutingIntent) -> None:
        intent.candidate_backends = [
            c for c in intent.candidate_backends if c.backend.priority < 15
        ]
        intent.annotations.custom_data["checked"] = True
        intent.trace(f"{self.name}: {len(intent.candidate_backends)} candidates after filtering")


def test_patterns_filtering_annotating_and_observability() -> None:
    intent = RoutingIntent(requirements(), fleet())
    ReconcilerPipeline([RetainingReconciler(), SelectionReconciler()]).execute_sync(intent)
    assert [c.name for c in intent.candidate_backends] == ["ollama-1", "openai"]
    assert intent.annotations.excluded_by("RetainingReconciler") == {
        "ollama-2": "removed by RetainingReconciler"
    }
    assert intent.annotations.custom_data == {"checked": True}
    assert "RetainingReconciler: 2 candidates after filtering" in intent.annotations.trace_info[0]


# "Configuration Examples"


def test_example_1_strict_privacy_mode_allows_only_local_backends() -> None:
    intent = RoutingIntent(requirements(), fleet())
    PrivacyReconciler(Privacy.RESTRICTED).reconcile(intent)
    assert {c.name for c in intent.candidate_backends} == {"ollama-1", "ollama-2"}


def test_example_2_budget_aware_routing_blocks_cloud_at_the_monthly_limit() -> None:
    budget = BudgetReconciler(Budget(monthly_limit_usd=100.0))
    budget.spend.add_spend(100.0, RoutingIntent(requirements()).now)
    intent = RoutingIntent(requirements(), fleet())
    budget.reconcile(intent)
    assert set(intent.annotations.budget_excluded) == {"openai"}
    assert intent.annotations.estimated_cost == pytest.approx(0.0)


def test_example_3_capability_tiers_enforce_vision() -> None:
    intent = RoutingIntent(requirements(needs_vision=True), fleet())
    CapabilityReconciler().reconcile(intent)
    assert set(intent.annotations.capability_excluded) == {"ollama-1"}


# "Debugging"


def test_trace_output_lists_every_reconciler() -> None:
    result = Router(registry(fleet())).select_backend(requirements())
    lines = result.annotations.trace_info
    assert lines[0].startswith("✓ RequestAnalyzer: 0→3")
    assert lines[-1] == "✓ SelectionReconciler: 3→3 candidates (selected openai)"


def test_understanding_exclusions_when_routing_fails() -> None:
    router = Router(registry(fleet()))
    with pytest.raises(ModelNotFound) as failure:
        router.select_backend(requirements(privacy=Privacy.RESTRICTED, min_tier=2))
    annotations = failure.value.annotations
    assert set(annotations.privacy_excluded) == {"openai"}
    assert annotations.budget_excluded == {}
    assert set(annotations.capability_excluded) == {"ollama-1", "ollama-2"}


# "Testing" — the unit and integration test templates.


class MyReconciler:
    name: ClassVar[str] = "MyReconciler"
    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_CLOSED

    def reconcile(self, intent: RoutingIntent) -> None:
        for candidate in list(intent.candidate_backends):
            if candidate.name == "bad_backend":
                intent.exclude(
                    candidate,
                    reason_code="excluded_by_reconciler",
                    reason="bad",
                    reconciler=self.name,
                )
        intent.trace(f"MyReconciler: {len(intent.candidate_backends)} kept")


def test_unit_test_template_my_reconciler_filters_correctly() -> None:
    intent = RoutingIntent(requirements(), [backend("good_backend"), backend("bad_backend")])
    MyReconciler().reconcile(intent)
    assert [c.name for c in intent.candidate_backends] == ["good_backend"]
    assert any("MyReconciler" in line for line in intent.annotations.trace_info)


async def test_integration_test_template_pipeline_with_my_reconciler() -> None:
    pipeline = ReconcilerPipeline([MyReconciler(), SelectionReconciler()])
    intent = RoutingIntent(requirements(), [backend("good_backend"), backend("bad_backend")])
    await pipeline.execute(intent)
    assert isinstance(intent.decision, RouteDecision)
    assert intent.decision.candidate.name == "good_backend"
    assert [e.backend for e in intent.annotations.exclusions] == ["bad_backend"]


# "FAQ"


class ExternalBudgetService:
    """An async reconciler doing blocking I/O off the loop, as the FAQ recommends."""

    name: ClassVar[str] = "ExternalBudgetService"
    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_OPEN

    async def reconcile(self, intent: RoutingIntent) -> None:
        status = await asyncio.to_thread(lambda: "ok")
        intent.annotations.custom_data["budget_status"] = status


async def test_faq_async_reconcilers_may_call_external_services() -> None:
    intent = RoutingIntent(requirements(), fleet())
    await ReconcilerPipeline([ExternalBudgetService(), SelectionReconciler()]).execute(intent)
    assert intent.annotations.custom_data == {"budget_status": "ok"}


def test_faq_sync_execution_runs_an_async_reconciler_outside_an_event_loop() -> None:
    intent = RoutingIntent(requirements(), fleet())
    ReconcilerPipeline([ExternalBudgetService(), SelectionReconciler()]).execute_sync(intent)
    assert intent.annotations.custom_data == {"budget_status": "ok"}
    assert isinstance(intent.decision, RouteDecision)


async def test_faq_sync_execution_inside_an_event_loop_says_to_await_execute() -> None:
    intent = RoutingIntent(requirements(), fleet())
    with pytest.raises(TypeError, match=r"await pipeline.execute\(intent\)"):
        ReconcilerPipeline([ExternalBudgetService()]).execute_sync(intent)


def test_faq_a_reconciler_removing_all_candidates_maps_to_model_not_found_with_reasons() -> None:
    pipeline = ReconcilerPipeline([PrivacyReconciler(Privacy.RESTRICTED), SelectionReconciler()])
    router = Router.with_pipeline(registry([backend("cloud", type="openai")]), pipeline)
    with pytest.raises(ModelNotFound) as failure:
        router.select_backend(requirements())
    assert failure.value.reason_code == "no_eligible_backends"
    assert failure.value.annotations.privacy_excluded == {
        "cloud": "privacy is restricted and the backend's zone is Open"
    }


def test_faq_reconcilers_read_annotations_of_earlier_ones_without_requiring_them() -> None:
    budget = BudgetReconciler(Budget(monthly_limit_usd=10.0))
    budget.spend.add_spend(8.0, RoutingIntent(requirements()).now)
    with_soft_limit = RoutingIntent(requirements(), fleet())
    ReconcilerPipeline([budget, SelectionReconciler()]).execute_sync(with_soft_limit)
    alone = RoutingIntent(requirements(), fleet())
    ReconcilerPipeline([SelectionReconciler()]).execute_sync(alone)
    assert with_soft_limit.decision.reason == "highest_score:ollama-1:95.0"  # type: ignore[union-attr]
    assert alone.decision.reason == "highest_score:openai:100.0"  # type: ignore[union-attr]


def test_faq_new_policy_without_modifying_code_through_the_entry_point() -> None:
    from routing_factories import policy

    reg = registry(
        fleet(), [policy("p", reconcilers=[{"name": "latency", "config": {"maxLatencyMs": 100}}])]
    )
    with_latency(reg, openai=500.0)
    decision = RoutingEngine(reg).route(requirements())
    assert decision.backend is not None
    assert decision.backend.name == "ollama-1"
