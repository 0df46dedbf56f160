"""SPEC §3 semantics: only-add, error policies, Route/Queue/Reject, fallbacks, trace, effects."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, ClassVar

from routing_factories import NOW, backend, codes, engine, policy

from nexus_operator.api import Privacy
from nexus_operator.pipeline import ReconcileErrorPolicy, RoutingIntent, reasons
from nexus_operator.routing import Outcome, RequestRequirements, UsageReport


def req(model_id: str = "llama3:8b", **kw: object) -> RequestRequirements:
    return RequestRequirements(model=model_id, **kw)  # type: ignore[arg-type]


class Exploding:
    """A plug-in that always raises, with a configurable error policy."""

    name: ClassVar[str] = "Exploding"

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.error_policy = ReconcileErrorPolicy(config.get("policy", "FailOpen"))

    def reconcile(self, intent: RoutingIntent) -> None:
        raise RuntimeError("boom")


def exploding(policy_name: str) -> Any:
    return engine(
        [backend("a")],
        [
            policy(
                "p",
                reconcilers=[{"name": "explode", "config": {"policy": policy_name}}],
                fallbacks=["qwen"],
            )
        ],
        plugins={"explode": Exploding},
    )


def test_each_backend_is_recorded_once_by_the_first_reconciler_that_excludes_it() -> None:
    eng = engine(
        [backend("everything-wrong", type="openai", draining=True, tier=1), backend("ok", tier=3)],
        [policy("p", privacy="restricted", minTier=2)],
    )
    decision = eng.route(req())
    assert [(e.backend, e.reconciler) for e in decision.exclusions] == [
        ("everything-wrong", "LifecycleReconciler")
    ]


def test_fail_closed_plug_in_rejects_with_reconciler_failed_and_no_fallbacks() -> None:
    decision = exploding("FailClosed").route(req())
    assert (decision.outcome, decision.reason) == (Outcome.REJECTED, reasons.RECONCILER_FAILED)
    [rejection] = decision.rejections
    assert rejection.reconciler == "Exploding"
    assert "boom" in rejection.reason
    assert not decision.fallback_used


def test_fail_open_plug_in_is_skipped_and_traced() -> None:
    decision = exploding("FailOpen").route(req())
    assert decision.outcome is Outcome.ROUTED
    assert [t.outcome for t in decision.trace if t.reconciler == "Exploding"] == ["skipped"]


def test_capacity_only_exclusions_queue_with_retry_after() -> None:
    eng = engine([backend("a", maxConcurrency=1), backend("b", maxConcurrency=1, draining=True)])
    eng.route(req(request_id="1"))
    eng.registry.runtime.backend("default", "a").record_ttft(250.0)
    decision = eng.route(req(request_id="2"))
    assert (decision.outcome, decision.reason) == (Outcome.QUEUED, reasons.AT_CAPACITY)
    assert decision.retry_after_ms == 250


def test_without_a_capacity_exclusion_an_empty_set_rejects_with_every_reason() -> None:
    eng = engine(
        [backend("a", draining=True), backend("b", type="openai")],
        [policy("p", privacy="restricted")],
    )
    decision = eng.route(req())
    assert (decision.outcome, decision.reason) == (Outcome.REJECTED, reasons.NO_ELIGIBLE_BACKENDS)
    assert codes(decision) == {"a": reasons.DRAINING, "b": reasons.PRIVACY_ZONE}
    assert {r.backend for r in decision.rejections} == {"a", "b"}


def test_fallback_is_tried_when_the_primary_is_rejected() -> None:
    eng = engine(
        [
            backend("big", models=["llama3:70b"], draining=True),
            backend("small", models=["llama3:8b"]),
        ],
        [policy("p", ["llama3:70b"], fallbacks=["llama3:8b"])],
    )
    decision = eng.route(req("llama3:70b"))
    assert (decision.outcome, decision.model, decision.fallback_used) == (
        Outcome.ROUTED,
        "llama3:8b",
        True,
    )
    assert decision.reason == "fallback:llama3:70b:only_candidate"


def test_fallback_is_tried_for_model_not_found_and_resolves_aliases() -> None:
    eng = engine(
        [backend("small", models=["llama3:8b"])],
        [policy("p", ["gpt-*"], fallbacks=["cheap"], aliases={"cheap": "llama3:8b"})],
    )
    decision = eng.route(req("gpt-5"))
    assert decision.model == "llama3:8b"
    assert decision.fallback_used


def test_fallbacks_are_not_tried_when_the_primary_queues() -> None:
    eng = engine(
        [backend("big", models=["llama3:70b"], maxConcurrency=1), backend("small")],
        [policy("p", ["llama3:70b"], fallbacks=["llama3:8b"])],
    )
    eng.route(req("llama3:70b", request_id="1"))
    assert eng.route(req("llama3:70b", request_id="2")).outcome is Outcome.QUEUED


def test_fallback_keeps_the_primary_privacy_tier_and_capabilities() -> None:
    eng = engine(
        [
            backend("cloud", type="openai", models=["gpt-4o"], tier=5),
            backend("local-small", models=["llama3:8b"], tier=1),
        ],
        [
            policy(
                "primary",
                ["secret-*"],
                privacy="restricted",
                minTier=3,
                fallbacks=["gpt-4o", "llama3:8b"],
            )
        ],
    )
    decision = eng.route(req("secret-model"))
    assert decision.outcome is Outcome.REJECTED
    by_model = {(r.model, r.reason_code) for r in decision.rejections}
    assert by_model == {
        ("secret-model", reasons.MODEL_NOT_FOUND),
        ("gpt-4o", reasons.PRIVACY_ZONE),
        ("llama3:8b", reasons.TIER_TOO_LOW),
    }


def test_strict_requests_and_fallback_allowed_false_skip_fallbacks() -> None:
    backends = [backend("big", models=["llama3:70b"], draining=True), backend("small")]
    strict = engine(backends, [policy("p", ["llama3:70b"], fallbacks=["llama3:8b"])]).route(
        req("llama3:70b", strict=True)
    )
    off = engine(
        backends, [policy("p", ["llama3:70b"], fallbacks=["llama3:8b"], fallbackAllowed=False)]
    ).route(req("llama3:70b"))
    assert strict.outcome is off.outcome is Outcome.REJECTED


def test_a_queued_fallback_makes_the_decision_queue() -> None:
    eng = engine(
        [backend("big", models=["llama3:70b"], draining=True), backend("small", maxConcurrency=1)],
        [policy("p", ["llama3:70b"], fallbacks=["llama3:8b"])],
    )
    eng.route(req("llama3:8b", request_id="1"))
    decision = eng.route(req("llama3:70b", request_id="2"))
    assert (decision.outcome, decision.model) == (Outcome.QUEUED, "llama3:8b")


def test_fallbacks_of_fallbacks_are_not_followed() -> None:
    eng = engine(
        [
            backend("a", models=["m1"], draining=True),
            backend("b", models=["m2"], draining=True),
            backend("c", models=["m3"]),
        ],
        [policy("p1", ["m1"], fallbacks=["m2"]), policy("p2", ["m2"], fallbacks=["m3"])],
    )
    decision = eng.route(req("m1"))
    assert decision.outcome is Outcome.REJECTED
    assert {r.model for r in decision.rejections} == {"m1", "m2"}


def test_fallback_name_that_fails_to_resolve_is_a_rejected_attempt() -> None:
    eng = engine(
        [backend("a", models=["m1"], draining=True)],
        [policy("p", ["m1"], fallbacks=["loop"], aliases={"loop": "pool", "pool": "loop"})],
    )
    decision = eng.route(req("m1"))
    assert [r.reason_code for r in decision.rejections] == [reasons.DRAINING, reasons.ALIAS_CYCLE]


def test_unknown_model_lists_available_models_sorted_deduplicated_including_draining() -> None:
    eng = engine(
        [
            backend("a", models=["b-model", "a-model"]),
            backend("z", models=["a-model", "c-model"], draining=True),
        ]
    )
    decision = eng.route(req("nope"))
    assert decision.reason == reasons.MODEL_NOT_FOUND
    assert decision.available_models == ["a-model", "b-model", "c-model"]


def test_available_models_are_capped_at_fifty() -> None:
    eng = engine([backend("a", models=[f"m{i:03d}" for i in range(80)])])
    assert len(eng.route(req("nope")).available_models) == 50


def test_a_known_model_whose_backends_are_all_excluded_is_not_model_not_found() -> None:
    decision = engine([backend("a", draining=True)]).route(req())
    assert decision.reason == reasons.NO_ELIGIBLE_BACKENDS
    assert decision.available_models == []


def test_every_decision_carries_a_trace_entry_per_reconciler() -> None:
    decision = engine([backend("a"), backend("b")]).route(req())
    assert [t.reconciler for t in decision.trace] == [
        "RequestAnalyzer",
        "LifecycleReconciler",
        "PrivacyReconciler",
        "BudgetReconciler",
        "CapabilityReconciler",
        "QualityReconciler",
        "HealthReconciler",
        "SelectionReconciler",
    ]
    assert all(t.elapsed_us >= 0 for t in decision.trace)


def test_explain_has_no_side_effects() -> None:
    eng = engine(
        [backend("a")], [policy("p", budget={"monthlyLimitUsd": 1, "accounting": "estimated"})]
    )
    eng.explain(req())
    cell, spend = (
        eng.registry.runtime.backend("default", "a"),
        eng.registry.runtime.policy("default", "p"),
    )
    assert (cell.in_flight, cell.selected_total, spend.routed, spend.spent_usd) == (0, 0, 0, 0.0)


def test_route_takes_a_slot_that_the_usage_report_releases() -> None:
    eng = engine([backend("a")], [policy("p")])
    eng.route(req(request_id="r1"))
    cell = eng.registry.runtime.backend("default", "a")
    assert (cell.in_flight, cell.selected_total, cell.last_selected_time) == (1, 1, NOW)
    eng.report_usage(UsageReport(backend="a", model="llama3:8b", request_id="r1", ttft_ms=100.0))
    assert (cell.in_flight, cell.ttft_ms) == (0, 100.0)


def test_unreported_slots_expire_after_the_timeout() -> None:
    eng = engine([backend("a")])
    eng.route(req())
    assert eng.expire_slots(NOW + timedelta(seconds=299)) == 0
    assert eng.expire_slots(NOW + timedelta(seconds=300)) == 1
    assert eng.registry.runtime.backend("default", "a").in_flight == 0


def test_decisions_count_on_the_matched_policy() -> None:
    eng = engine([backend("a")], [policy("p", ["llama*", "nope*"])])
    eng.route(req())
    eng.route(req("nope-model"))
    spend = eng.registry.runtime.policy("default", "p")
    assert (spend.routed, spend.rejected) == (1, 1)
    assert spend.last_routed is not None
    assert spend.last_routed.backend == "a"
    assert spend.last_rejected is not None
    assert spend.last_rejected.model == "nope-model"


def test_request_privacy_restricted_with_open_only_backends_rejects() -> None:
    decision = engine([backend("cloud", type="anthropic")]).route(req(privacy=Privacy.RESTRICTED))
    assert decision.outcome is Outcome.REJECTED
