"""The seed quickstart (/work/shared/seed-quickstart.md), section by section, in Python.

Each example is written the way a reader translating the seed's Rust would write it, with the
seed's names where Python allows (RoutingAnnotations, PrivacyConstraint, avg_latency_ms,
trace_info.contains, custom annotations). Where the seed's form cannot work here, the test pins
an error that says what to write instead.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from routing_factories import backend, model, policy, registry

from nexus_operator.api import Backend, Budget, Strategy, Weights
from nexus_operator.pipeline import (
    BudgetReconciler,
    Candidate,
    CapabilityReconciler,
    PrivacyConstraint,
    PrivacyReconciler,
    ReconcileErrorPolicy,
    ReconcilerPipeline,
    RouteDecision,
    RoutingAnnotations,
    RoutingIntent,
    SelectionReconciler,
)
from nexus_operator.pipeline import LatencyReconciler as BuiltInLatencyReconciler
from nexus_operator.routing import (
    ModelNotFound,
    NoEligibleBackends,
    Registry,
    RequestRequirements,
    Router,
    RoutingEngine,
)

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


def freshly_registered() -> Registry:
    """Backends just registered, as the seed's registry holds them: never probed."""
    reg = Registry()
    for b in fleet():
        reg.upsert_backend(b)
    return reg


def requirements(**kw: Any) -> RequestRequirements:
    fields: dict[str, Any] = {"model": "llama3:8b", "estimated_tokens": 1000}
    fields.update(kw)
    return RequestRequirements(**fields)


def with_latency(reg: Registry, **latencies: float) -> None:
    for name, value in latencies.items():
        reg.runtime.backend("default", name).latency_ms = value


# The seed's custom reconciler ("Creating a Custom Reconciler", steps 1 and 2), as written.


class LatencyReconciler:
    """Reject backends with high latency; async, fail-open, as the seed declares it."""

    name: ClassVar[str] = "LatencyReconciler"

    def __init__(self, max_latency_ms: int) -> None:
        self.max_latency_ms = max_latency_ms

    async def reconcile(self, intent: RoutingIntent) -> None:
        excluded: dict[str, str] = {}
        kept = []
        for candidate in intent.candidate_backends:
            latency = candidate.avg_latency_ms
            if latency > self.max_latency_ms:
                excluded[candidate.name] = (
                    f"Latency {latency:.0f}ms exceeds limit {self.max_latency_ms}ms"
                )
            else:
                kept.append(candidate)
        intent.candidate_backends = kept
        intent.annotations.latency_excluded = excluded  # a custom annotation (Pattern 3)
        intent.trace(
            f"Latency: {len(intent.candidate_backends)} backends within "
            f"{self.max_latency_ms}ms limit"
        )

    @property
    def error_policy(self) -> ReconcileErrorPolicy:
        return ReconcileErrorPolicy.FAIL_OPEN  # Degrade gracefully


# "1. Understanding the Pipeline"


def test_1_the_four_stages_run_in_order_from_intent_to_decision() -> None:
    intent = RoutingIntent(requirements(), fleet())
    ReconcilerPipeline(
        [PrivacyReconciler(), BudgetReconciler(), CapabilityReconciler(), SelectionReconciler()]
    ).execute_sync(intent)
    assert [line.split(":")[0] for line in intent.annotations.trace_info] == [
        "✓ PrivacyReconciler",
        "✓ BudgetReconciler",
        "✓ CapabilityReconciler",
        "✓ SelectionReconciler",
    ]
    assert isinstance(intent.decision, RouteDecision)


# "2. Using the Router (No Changes!)"


def test_2_router_on_freshly_registered_backends_says_how_to_count_them_healthy() -> None:
    router = Router(freshly_registered(), Strategy.SMART, Weights())
    with pytest.raises(NoEligibleBackends, match=r"registry\.mark_unprobed_healthy\(\)"):
        router.select_backend(requirements())


def test_2_router_selects_a_backend_with_a_route_reason() -> None:
    reg = freshly_registered()
    assert reg.mark_unprobed_healthy() == 3
    router = Router(reg, Strategy.SMART, Weights())
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


# "3. Understanding RoutingIntent"


def test_3_intent_annotations_after_pipeline_execution() -> None:
    intent = RoutingIntent(requirements(), fleet())
    pipeline = ReconcilerPipeline(
        [
            PrivacyReconciler(PrivacyConstraint.RESTRICTED),
            BudgetReconciler(),
            SelectionReconciler(),
        ]
    )
    pipeline.execute_sync(intent)
    annotations: RoutingAnnotations = intent.annotations
    assert annotations.trace_info.contains("PrivacyReconciler: 3→2")
    assert annotations.privacy_excluded == {
        "openai": "privacy is restricted and the backend's zone is Open"
    }
    assert f"${annotations.estimated_cost:.2f}" == "$0.00"


# "Creating a Custom Reconciler", steps 1 and 2


def test_step_2_the_seeds_latency_reconciler_works_on_backends_never_measured() -> None:
    intent = RoutingIntent(requirements(), fleet())
    ReconcilerPipeline([LatencyReconciler(200)]).execute_sync(intent)
    assert len(intent.candidate_backends) == 3
    assert intent.annotations.trace_info == [
        "✓ LatencyReconciler: 3→3 candidates (Latency: 3 backends within 200ms limit)"
    ]


def test_step_2_the_seeds_latency_reconciler_excludes_the_slow_backend() -> None:
    fast, slow = fleet()[:2]
    intent = RoutingIntent(
        requirements(),
        [
            Candidate.of(fast, "llama3:8b", latency_ms=150),
            Candidate.of(slow, "llama3:8b", latency_ms=350),
        ],
    )
    ReconcilerPipeline([LatencyReconciler(200)]).execute_sync(intent)
    assert [c.name for c in intent.candidate_backends] == ["ollama-1"]
    assert intent.annotations.latency_excluded == {"ollama-2": "Latency 350ms exceeds limit 200ms"}
    assert intent.annotations.excluded_by("LatencyReconciler") == {
        "ollama-2": "removed by LatencyReconciler"
    }


def test_step_2_the_shipped_latency_reconciler_declares_fail_open_and_its_name() -> None:
    reconciler = BuiltInLatencyReconciler(200)
    assert (reconciler.name, reconciler.error_policy) == (
        "LatencyReconciler",
        ReconcileErrorPolicy.FAIL_OPEN,
    )


# "Step 3: Add to Pipeline"


def test_step_3_router_with_pipeline_runs_the_async_reconciler_from_sync_select_backend() -> None:
    reg = freshly_registered()
    with_latency(reg, openai=900.0, **{"ollama-1": 150.0, "ollama-2": 50.0})
    pipeline = ReconcilerPipeline(
        [
            PrivacyReconciler(PrivacyConstraint.UNRESTRICTED),
            BudgetReconciler(),
            LatencyReconciler(200),  # Your custom reconciler!
            CapabilityReconciler(),
            SelectionReconciler(Strategy.SMART, Weights()),
        ]
    )
    router = Router.with_pipeline(reg, pipeline)
    result = router.select_backend(requirements())
    assert result.backend.name == "ollama-1"
    assert result.annotations.latency_excluded == {"openai": "Latency 900ms exceeds limit 200ms"}


async def test_step_3_inside_an_event_loop_the_async_pipeline_is_awaited() -> None:
    router = Router.with_pipeline(
        freshly_registered(), ReconcilerPipeline([LatencyReconciler(200)])
    )
    with pytest.raises(TypeError, match=r"select_backend_async"):
        router.select_backend(requirements())
    with pytest.raises(ModelNotFound):  # no SelectionReconciler: nothing decides
        await router.select_backend_async(requirements())


# "Common Patterns"


class PatternsReconciler:
    name: ClassVar[str] = "PatternsReconciler"
    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_OPEN

    def check_policy(self, candidate: Candidate) -> bool:
        return candidate.backend.priority < 15

    def reconcile(self, intent: RoutingIntent) -> None:
        # Pattern 2: annotate for downstream reconcilers.
        intent.annotations.estimated_cost = 0.42
        intent.annotations.custom_data = {"my_data": 1}
        # Pattern 1 and 3: filter, recording why in a custom annotation.
        excluded: dict[str, str] = {}
        kept = []
        for candidate in intent.candidate_backends:
            if self.check_policy(candidate):
                kept.append(candidate)
            else:
                excluded[candidate.name] = "Reason: priority 15 or more"
        intent.candidate_backends = kept
        intent.annotations.my_excluded = excluded
        # Pattern 4: observability.
        intent.trace(f"{self.name}: {len(intent.candidate_backends)} candidates after filtering")


def test_patterns_filtering_annotating_recording_exclusions_and_observability() -> None:
    intent = RoutingIntent(requirements(), fleet())
    ReconcilerPipeline([PatternsReconciler()]).execute_sync(intent)
    annotations = intent.annotations
    assert [c.name for c in intent.candidate_backends] == ["ollama-1", "openai"]
    assert annotations.my_excluded == {"ollama-2": "Reason: priority 15 or more"}
    assert annotations.custom_data == {"my_data": 1, "my_excluded": annotations.my_excluded}
    assert annotations.estimated_cost == 0.42
    assert annotations.trace_info.contains("PatternsReconciler: 2 candidates after filtering")


def test_custom_annotations_are_custom_data_by_name() -> None:
    annotations = RoutingAnnotations()
    annotations.my_field = "set as an attribute"
    annotations.custom_data["other"] = "set in the dict"
    assert annotations.custom_data == {
        "my_field": "set as an attribute",
        "other": "set in the dict",
    }
    assert annotations.other == "set in the dict"


# "Configuration Examples"


def test_example_1_strict_privacy_mode_allows_only_local_backends() -> None:
    privacy = PrivacyReconciler(PrivacyConstraint.RESTRICTED)
    intent = RoutingIntent(requirements(), fleet())
    privacy.reconcile(intent)
    assert {c.name for c in intent.candidate_backends} == {"ollama-1", "ollama-2"}


def test_example_2_the_seeds_cost_model_form_says_where_prices_go() -> None:
    cost_model = {"openai": 0.03 / 1000.0, "ollama": 0.0}
    with pytest.raises(TypeError, match=r"BudgetReconciler\(Budget\(monthly_limit_usd=100.0\)\)"):
        BudgetReconciler(cost_model, 100.0)  # type: ignore[arg-type]


def test_example_2_budget_aware_routing_blocks_cloud_at_the_monthly_limit() -> None:
    budget = BudgetReconciler(Budget(monthly_limit_usd=100.0))  # $100 monthly limit
    budget.spend.add_spend(100.0, RoutingIntent(requirements()).now)
    intent = RoutingIntent(requirements(), fleet())
    budget.reconcile(intent)
    assert set(intent.annotations.budget_excluded) == {"openai"}


def test_example_3_capability_tiers_enforce_vision() -> None:
    intent = RoutingIntent(requirements(needs_vision=True), fleet())
    CapabilityReconciler().reconcile(intent)
    assert set(intent.annotations.capability_excluded) == {"ollama-1"}


# "Debugging"


def test_trace_output_lists_every_reconciler() -> None:
    reg = freshly_registered()
    reg.mark_unprobed_healthy()
    result = Router(reg).select_backend(requirements())
    lines = result.annotations.trace_info
    assert lines[0].startswith("✓ RequestAnalyzer: 0→3")
    assert lines[-1] == "✓ SelectionReconciler: 3→3 candidates (selected openai)"


def test_understanding_exclusions_when_routing_fails() -> None:
    router = Router(registry(fleet()))
    with pytest.raises(ModelNotFound) as failure:
        router.select_backend(requirements(privacy=PrivacyConstraint.RESTRICTED, min_tier=2))
    annotations = failure.value.annotations
    assert set(annotations.privacy_excluded) == {"openai"}
    assert annotations.budget_excluded == {}
    assert set(annotations.capability_excluded) == {"ollama-1", "ollama-2"}


# "Performance Tips": synchronous reconcilers keep a pipeline synchronous.


def test_use_synchronous_logic_a_pipeline_knows_whether_it_must_await() -> None:
    assert not ReconcilerPipeline([PatternsReconciler(), SelectionReconciler()]).is_async
    assert ReconcilerPipeline([LatencyReconciler(200), SelectionReconciler()]).is_async


# "Testing" — the unit and integration test templates, candidates built directly.


class MyReconciler:
    name: ClassVar[str] = "MyReconciler"
    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_CLOSED

    async def reconcile(self, intent: RoutingIntent) -> None:
        intent.candidate_backends = [
            c for c in intent.candidate_backends if c.name != "bad_backend"
        ]
        intent.trace(f"{len(intent.candidate_backends)} kept")


def good_backend() -> Backend:
    return backend("good_backend")


def bad_backend() -> Backend:
    return backend("bad_backend")


async def test_unit_test_template_my_reconciler_filters_correctly() -> None:
    reconciler = MyReconciler()
    intent = RoutingIntent(requirements(), [good_backend(), bad_backend()])
    await reconciler.reconcile(intent)
    assert len(intent.candidate_backends) == 1
    assert intent.candidate_backends[0].name == "good_backend"
    assert intent.annotations.trace_info.contains("MyReconciler")


async def test_integration_test_template_pipeline_with_my_reconciler() -> None:
    pipeline = ReconcilerPipeline([MyReconciler(), SelectionReconciler()])
    intent = RoutingIntent(requirements(), [good_backend(), bad_backend()])
    await pipeline.execute(intent)
    assert intent.decision is not None


def test_plain_backends_in_a_candidate_list_have_latency_zero_until_measured() -> None:
    intent = RoutingIntent(requirements(), [good_backend()])
    assert intent.candidate_backends[0].avg_latency_ms == 0.0
    assert intent.candidate_backends[0].latency_ms is None
    assert Candidate.of(good_backend(), "llama3:8b", latency_ms=80).avg_latency_ms == 80


# "Migration Guide": select_backend_async runs the pipeline on an intent.


async def test_migration_router_select_backend_async() -> None:
    reg = freshly_registered()
    reg.mark_unprobed_healthy()
    result = await Router(reg, Strategy.PRIORITY_ONLY, Weights()).select_backend_async(
        requirements()
    )
    assert result.route_reason == "priority:openai:0"


# "FAQ"


class ExternalBudgetService:
    """An async reconciler doing blocking I/O off the loop, as the FAQ recommends."""

    name: ClassVar[str] = "ExternalBudgetService"
    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_OPEN

    async def reconcile(self, intent: RoutingIntent) -> None:
        budget_status = await asyncio.to_thread(lambda: "ok")
        intent.annotations.budget_status = budget_status


async def test_faq_async_reconcilers_may_call_external_services() -> None:
    intent = RoutingIntent(requirements(), fleet())
    await ReconcilerPipeline([ExternalBudgetService(), SelectionReconciler()]).execute(intent)
    assert intent.annotations.budget_status == "ok"


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
    pipeline = ReconcilerPipeline(
        [PrivacyReconciler(PrivacyConstraint.RESTRICTED), SelectionReconciler()]
    )
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
    assert isinstance(with_soft_limit.decision, RouteDecision)
    assert isinstance(alone.decision, RouteDecision)
    assert with_soft_limit.decision.reason == "highest_score:ollama-1:95.0"
    assert alone.decision.reason == "highest_score:openai:100.0"


def test_faq_new_policy_without_modifying_code_through_the_entry_point() -> None:
    reg = registry(
        fleet(), [policy("p", reconcilers=[{"name": "latency", "config": {"maxLatencyMs": 100}}])]
    )
    with_latency(reg, openai=500.0)
    decision = RoutingEngine(reg).route(requirements())
    assert decision.backend is not None
    assert decision.backend.name == "ollama-1"
