"""SPEC §3 steps 2–8: lifecycle, privacy, budget, capability, quality, health and plug-ins."""

from __future__ import annotations

from datetime import timedelta

import pytest
from routing_factories import NOW, backend, codes, engine, model, policy

from nexus_operator.api import Backend, BudgetState, Privacy
from nexus_operator.pipeline import reasons
from nexus_operator.routing import Outcome, RequestRequirements, RoutingEngine, UsageReport


def req(model_id: str = "llama3:8b", **kw: object) -> RequestRequirements:
    return RequestRequirements(model=model_id, **kw)  # type: ignore[arg-type]


def priced(name: str, *, input_per1k: float, output_per1k: float, **spec: object) -> Backend:
    pricing = {"inputPer1k": input_per1k, "outputPer1k": output_per1k}
    return backend(name, models=[model("llama3:8b", pricing=pricing)], **spec)  # type: ignore[arg-type]


# Lifecycle


def test_draining_backend_is_excluded_with_draining_code() -> None:
    eng = engine([backend("cordoned", draining=True, priority=0), backend("serving")])
    decision = eng.route(req())
    assert decision.backend.name == "serving"  # type: ignore[union-attr]
    assert codes(decision) == {"cordoned": reasons.DRAINING}


# Privacy


def test_restricted_policy_excludes_open_backends() -> None:
    eng = engine(
        [backend("cloud", type="openai", priority=0), backend("local")],
        [policy("private", privacy="restricted")],
    )
    decision = eng.route(req())
    assert decision.backend.name == "local"  # type: ignore[union-attr]
    [exclusion] = decision.exclusions
    assert (exclusion.reason_code, exclusion.privacy_zone_required) == (
        reasons.PRIVACY_ZONE,
        "Restricted",
    )


def test_request_can_tighten_privacy() -> None:
    eng = engine([backend("cloud", type="openai", priority=0), backend("local")])
    decision = eng.route(req(privacy=Privacy.RESTRICTED))
    assert codes(decision) == {"cloud": reasons.PRIVACY_ZONE}


def test_request_cannot_loosen_a_restricted_policy() -> None:
    eng = engine([backend("cloud", type="openai")], [policy("private", privacy="restricted")])
    decision = eng.route(req(privacy=Privacy.UNRESTRICTED))
    assert decision.outcome is Outcome.REJECTED
    assert codes(decision) == {"cloud": reasons.PRIVACY_ZONE}


def test_explicit_zone_overrides_the_type_default() -> None:
    eng = engine(
        [backend("onprem-openai", type="openai", zone="Restricted")],
        [policy("p", privacy="restricted")],
    )
    assert eng.route(req()).outcome is Outcome.ROUTED


# Budget


def test_cost_estimate_prices_max_output_tokens_or_half_the_input() -> None:
    eng = engine([priced("paid", input_per1k=1.0, output_per1k=2.0)])
    assert eng.explain(req(estimated_tokens=1000)).cost_estimate == pytest.approx(1.0 + 1.0)
    assert eng.explain(
        req(estimated_tokens=1000, max_output_tokens=100)
    ).cost_estimate == pytest.approx(1.2)


def test_unpriced_models_cost_nothing() -> None:
    assert engine([backend("free")]).route(req(estimated_tokens=5000)).cost_estimate == 0.0


def spent_engine(spent: float, **budget: object) -> RoutingEngine:
    eng = engine(
        [backend("cloud", type="openai", priority=0), backend("local", priority=60)],
        [policy("p", budget={"monthlyLimitUsd": 100, **budget})],
    )
    eng.registry.runtime.policy("default", "p").add_spend(spent, NOW)
    return eng


def test_budget_status_limits_are_inclusive() -> None:
    assert spent_engine(74.99).route(req()).budget_state is BudgetState.NORMAL
    assert spent_engine(75.0).route(req()).budget_state is BudgetState.SOFT_LIMIT
    assert spent_engine(100.0).route(req()).budget_state is BudgetState.HARD_LIMIT


def test_hard_limit_block_cloud_excludes_open_zones() -> None:
    decision = spent_engine(100.0).route(req())
    assert decision.backend is not None
    assert decision.backend.name == "local"
    assert codes(decision) == {"cloud": reasons.BUDGET_HARD_LIMIT}


def test_hard_limit_block_all_excludes_every_backend() -> None:
    decision = spent_engine(150.0, hardLimitAction="blockAll").route(req())
    assert decision.outcome is Outcome.REJECTED
    assert codes(decision) == {
        "cloud": reasons.BUDGET_HARD_LIMIT,
        "local": reasons.BUDGET_HARD_LIMIT,
    }


def test_hard_limit_warn_excludes_nothing_but_halves_open_scores() -> None:
    decision = spent_engine(100.0, hardLimitAction="warn").route(req())
    assert decision.exclusions == []
    assert decision.reason == "highest_score:local:70.0"


def test_soft_limit_halves_open_zone_scores() -> None:
    normal = spent_engine(10.0).route(req())
    soft = spent_engine(80.0).route(req())
    assert normal.reason == "highest_score:cloud:100.0"
    assert soft.reason == "highest_score:local:70.0"


def test_max_cost_per_request_excludes_above_and_passes_equal() -> None:
    eng = engine(
        [
            priced("exact", input_per1k=1.0, output_per1k=0.0),
            priced("over", input_per1k=1.01, output_per1k=0.0),
        ],
        [policy("p", maxCostPerRequestUsd=1.0)],
    )
    decision = eng.route(req(estimated_tokens=1000, max_output_tokens=0))
    assert decision.backend.name == "exact"  # type: ignore[union-attr]
    assert codes(decision) == {"over": reasons.COST_EXCEEDS_MAX}


def test_no_monthly_limit_means_no_budget_state() -> None:
    assert engine([backend("a")], [policy("p")]).route(req()).budget_state is None


def test_estimated_accounting_adds_each_route_and_the_next_request_sees_it() -> None:
    eng = engine(
        [priced("paid", input_per1k=10.0, output_per1k=0.0)],
        [policy("p", budget={"monthlyLimitUsd": 12, "accounting": "estimated"})],
    )
    first = eng.route(req(estimated_tokens=1000, max_output_tokens=0))
    second = eng.route(req(estimated_tokens=1000, max_output_tokens=0))
    assert (first.budget_state, second.budget_state) == (BudgetState.NORMAL, BudgetState.SOFT_LIMIT)
    assert eng.registry.runtime.policy("default", "p").spent_usd == pytest.approx(20.0)


def test_reported_accounting_counts_usage_reports_not_routes() -> None:
    eng = engine(
        [priced("paid", input_per1k=1.0, output_per1k=1.0)],
        [policy("p", budget={"monthlyLimitUsd": 10})],
    )
    eng.route(req(estimated_tokens=1000))
    spend = eng.registry.runtime.policy("default", "p")
    assert spend.spent_usd == 0.0
    eng.report_usage(
        UsageReport(
            backend="paid", model="llama3:8b", policy="p", input_tokens=1000, output_tokens=500
        )
    )
    assert spend.spent_usd == pytest.approx(1.5)
    eng.report_usage(UsageReport(backend="paid", model="llama3:8b", cost_usd=2.0))
    assert spend.spent_usd == pytest.approx(3.5)


def test_month_rollover_resets_spend() -> None:
    eng = spent_engine(100.0)
    next_month = NOW + timedelta(days=31)
    eng._clock = lambda: next_month
    assert eng.route(req()).budget_state is BudgetState.NORMAL


# Capability


def test_tier_below_the_higher_of_policy_and_request_floor_is_excluded() -> None:
    eng = engine([backend("small", tier=2), backend("big", tier=4)], [policy("p", minTier=2)])
    decision = eng.route(req(min_tier=3))
    assert decision.backend.name == "big"  # type: ignore[union-attr]
    [exclusion] = decision.exclusions
    assert (exclusion.reason_code, exclusion.required_tier) == (reasons.TIER_TOO_LOW, 3)


def test_request_min_tier_never_lowers_the_policy_floor() -> None:
    eng = engine([backend("small", tier=1)], [policy("p", minTier=3)])
    assert codes(eng.route(req(min_tier=1))) == {"small": reasons.TIER_TOO_LOW}


def test_every_missing_capability_is_listed_in_one_reason() -> None:
    eng = engine([backend("plain")], [policy("p", requiredCapabilities={"tools": True})])
    decision = eng.route(req(needs_vision=True, needs_json_mode=True))
    [exclusion] = decision.exclusions
    assert exclusion.reason_code == reasons.MISSING_CAPABILITIES
    assert all(word in exclusion.reason for word in ("vision", "tools", "jsonMode"))


def test_context_equal_to_the_limit_passes_and_one_more_token_is_excluded() -> None:
    eng = engine([backend("b", models=[model("llama3:8b", contextLength=1000)])])
    assert eng.route(req(estimated_tokens=900, max_output_tokens=100)).outcome is Outcome.ROUTED
    decision = eng.route(req(estimated_tokens=901, max_output_tokens=100))
    assert codes(decision) == {"b": reasons.CONTEXT_TOO_LONG}


def test_min_context_length_from_the_policy_excludes_short_models() -> None:
    eng = engine(
        [
            backend("short", models=[model(contextLength=2048)]),
            backend("long", models=[model(contextLength=8192)]),
        ],
        [policy("p", requiredCapabilities={"minContextLength": 4096})],
    )
    decision = eng.route(req())
    assert decision.backend is not None
    assert (decision.backend.name, codes(decision)) == (
        "long",
        {"short": reasons.MISSING_CAPABILITIES},
    )


def test_max_output_tokens_above_the_model_limit_is_excluded() -> None:
    eng = engine([backend("b", models=[model(maxOutputTokens=512)])])
    assert codes(eng.route(req(max_output_tokens=1024))) == {"b": reasons.MISSING_CAPABILITIES}
    assert eng.route(req(max_output_tokens=512)).outcome is Outcome.ROUTED


# Quality


def failing_engine(failures: int, successes: int, **quality: object) -> object:
    eng = engine(
        [backend("flaky", priority=0), backend("steady")],
        [policy("p", quality=quality)] if quality else [],
    )
    for ok in [False] * failures + [True] * successes:
        eng.report_usage(UsageReport(backend="flaky", model="llama3:8b", success=ok))
    return eng


def test_error_rate_at_the_threshold_is_excluded() -> None:
    decision = failing_engine(1, 1).route(req())  # type: ignore[attr-defined]
    assert codes(decision) == {"flaky": reasons.ERROR_RATE}


def test_error_rate_below_the_threshold_passes() -> None:
    assert failing_engine(1, 2).route(req()).exclusions == []  # type: ignore[attr-defined]


def test_backends_without_reports_in_the_last_hour_pass() -> None:
    eng = failing_engine(3, 0)
    eng._clock = lambda: NOW + timedelta(hours=1, seconds=1)  # type: ignore[attr-defined]
    assert eng.route(req()).exclusions == []  # type: ignore[attr-defined]


def test_quality_disabled_turns_off_the_error_rate_exclusion() -> None:
    assert failing_engine(3, 0, enabled=False).route(req()).exclusions == []  # type: ignore[attr-defined]


# Health


def test_unhealthy_and_unknown_backends_are_excluded() -> None:
    eng = engine([backend("unknown"), backend("down"), backend("up")], healthy=False)
    runtime = eng.registry.runtime
    runtime.backend("default", "up").set_assumed_healthy()
    runtime.backend("default", "down").record_probe(
        False, None, error="refused", failure_threshold=3, recovery_threshold=2, now=NOW
    )
    decision = eng.route(req())
    assert codes(decision) == {"unknown": reasons.HEALTH_UNKNOWN, "down": reasons.UNHEALTHY}


def test_backend_at_max_concurrency_is_skipped() -> None:
    eng = engine([backend("small", maxConcurrency=1, priority=0), backend("big")])
    assert eng.route(req(request_id="1")).backend.name == "small"  # type: ignore[union-attr]
    second = eng.route(req(request_id="2"))
    assert second.backend.name == "big"  # type: ignore[union-attr]
    assert codes(second) == {"small": reasons.AT_CAPACITY}


def test_health_is_checked_before_capacity() -> None:
    eng = engine([backend("b", maxConcurrency=1)])
    eng.route(req(request_id="1"))
    eng.registry.runtime.backend("default", "b").health_state = eng.registry.runtime.backend(
        "default", "b"
    ).health_state.UNHEALTHY
    decision = eng.route(req(request_id="2"))
    assert (decision.outcome, codes(decision)) == (Outcome.REJECTED, {"b": reasons.UNHEALTHY})


# Plug-ins


def test_policy_plug_in_runs_before_selection() -> None:
    eng = engine(
        [backend("slow", priority=0), backend("fast")],
        [policy("p", reconcilers=[{"name": "latency", "config": {"maxLatencyMs": 200}}])],
    )
    eng.registry.runtime.backend("default", "slow").latency_ms = 500.0
    decision = eng.route(req())
    assert decision.backend.name == "fast"  # type: ignore[union-attr]
    assert codes(decision) == {"slow": reasons.LATENCY_TOO_HIGH}
    assert [t.reconciler for t in decision.trace][-2:] == [
        "LatencyReconciler",
        "SelectionReconciler",
    ]


def test_unknown_plug_in_fails_open_and_is_traced() -> None:
    eng = engine([backend("a")], [policy("p", reconcilers=[{"name": "no-such-thing"}])])
    decision = eng.route(req())
    assert decision.outcome is Outcome.ROUTED
    [entry] = [t for t in decision.trace if t.reconciler == "no-such-thing"]
    assert entry.outcome == "skipped"
