"""What one Route decision adds to the decision counters, as a scrape shows it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from routing_factories import backend, engine

from nexus_operator.pipeline import Exclusion
from nexus_operator.routing import Decision, Outcome, RequestRequirements, TraceEntry
from nexus_operator.serving.metrics import RoutingMetrics


def scrape(metrics: RoutingMetrics) -> str:
    registry = CollectorRegistry()
    registry.register(metrics)
    text: str = generate_latest(registry).decode()
    return text


def test_a_routed_decision_counts_outcome_route_latency_and_each_reconciler() -> None:
    eng = engine([backend("a"), backend("b")])
    metrics = RoutingMetrics(eng.registry)
    decision = eng.route(RequestRequirements(model="llama3:8b"))
    assert decision.backend is not None
    metrics.observe_decision(decision, 3e-5, namespace="default")
    text = scrape(metrics)
    assert 'nexus_decisions_total{outcome="ROUTED"} 1.0' in text
    assert (
        "nexus_route_decisions_total{backend="
        f'"{decision.backend.name}",model="llama3:8b",namespace="default",outcome="ROUTED",'
        'policy=""} 1.0'
    ) in text
    assert 'nexus_decision_duration_seconds_bucket{le="5e-05"} 1.0' in text
    for entry in decision.trace:
        assert (
            f'nexus_reconciler_duration_seconds_count{{reconciler="{entry.reconciler}"}} 1.0'
            in (text)
        )


def test_reconciler_time_is_exported_in_seconds_and_exclusions_by_reason() -> None:
    metrics = RoutingMetrics(engine([backend("a")]).registry)
    tier = Exclusion("a", "TierReconciler", "tier_too_low", "tier 1 < 3")
    decision = Decision(
        Outcome.REJECTED,
        "unlisted",
        "no backend",
        trace=[TraceEntry("TierReconciler", 1, 0, 250.0), TraceEntry("TierReconciler", 0, 0, 2.0)],
        exclusions=[tier, tier],
    )
    metrics.observe_decision(decision, 1e-3, namespace="team")
    metrics.observe_decision(decision, 1e-3, namespace="team")
    text = scrape(metrics)
    assert 'nexus_reconciler_duration_seconds_sum{reconciler="TierReconciler"} 0.000504' in text
    assert (
        'nexus_reconciler_duration_seconds_bucket{le="0.0005",reconciler="TierReconciler"} 4.0'
        in text
    )
    assert (
        'nexus_reconciler_duration_seconds_bucket{le="0.0001",reconciler="TierReconciler"} 2.0'
        in text
    )
    assert (
        'nexus_reconciler_exclusions_total{reason_code="tier_too_low",reconciler="TierReconciler"}'
        " 4.0"
    ) in text
    assert (
        'nexus_route_decisions_total{backend="",model="",namespace="team",outcome="REJECTED",'
        'policy=""} 2.0'
    ) in text
    assert metrics.counts().reconcilers["TierReconciler"][1] == 504e-6
