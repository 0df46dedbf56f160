"""SPEC §3: Queue only when a backend was excluded *only* for capacity — it must also pass the
stages after the HealthReconciler (plug-ins) — otherwise Reject."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from routing_factories import backend, codes, engine, policy

from nexus_operator.pipeline import ReconcileErrorPolicy, RoutingIntent, reasons
from nexus_operator.routing import Outcome, RequestRequirements, RoutingEngine

REQ = RequestRequirements(model="llama3:8b")
LATENCY_CAP = [{"name": "latency", "config": {"maxLatencyMs": 200}}]


def fleet(*, full: Mapping[str, float], free: Mapping[str, float] | None = None) -> RoutingEngine:
    """Backends by name → latency: `full` ones at their maxConcurrency of 1, `free` ones idle."""
    free = free or {}
    eng = engine(
        [backend(n, maxConcurrency=1) for n in full] + [backend(n) for n in free],
        [policy("p", reconcilers=LATENCY_CAP)],
    )
    runtime = eng.registry.runtime
    for name, latency in {**full, **free}.items():
        runtime.backend("default", name).latency_ms = latency
    for name in full:
        runtime.backend("default", name).in_flight = 1
    return eng


def test_a_full_backend_a_plug_in_would_exclude_rejects_instead_of_queueing() -> None:
    decision = fleet(full={"a": 900.0}).route(REQ)
    assert (decision.outcome, decision.reason) == (Outcome.REJECTED, reasons.NO_ELIGIBLE_BACKENDS)
    assert codes(decision) == {"a": reasons.AT_CAPACITY}
    assert [(r.backend, r.reason_code) for r in decision.rejections] == [
        ("a", reasons.LATENCY_TOO_HIGH)
    ]


def test_a_full_backend_that_passes_the_plug_ins_queues() -> None:
    decision = fleet(full={"a": 100.0}).route(REQ)
    assert (decision.outcome, decision.reason) == (Outcome.QUEUED, reasons.AT_CAPACITY)
    assert "LatencyReconciler" in [t.reconciler for t in decision.trace]


def test_full_backends_are_checked_by_the_plug_in_that_emptied_the_set() -> None:
    rejected = fleet(full={"a": 900.0}, free={"b": 900.0}).route(REQ)
    queued = fleet(full={"a": 100.0}, free={"b": 900.0}).route(REQ)
    assert rejected.outcome is Outcome.REJECTED
    assert codes(rejected) == {"a": reasons.AT_CAPACITY, "b": reasons.LATENCY_TOO_HIGH}
    assert queued.outcome is Outcome.QUEUED


def test_queue_wait_comes_from_the_full_backends_that_would_pass() -> None:
    eng = fleet(full={"fast": 100.0, "slow": 900.0})
    eng.registry.runtime.backend("default", "fast").record_ttft(400.0)
    eng.registry.runtime.backend("default", "slow").record_ttft(250.0)
    decision = eng.explain(REQ)
    assert decision.outcome is Outcome.QUEUED
    assert decision.retry_after_ms == 400


class ClosedAndBroken:
    name: ClassVar[str] = "ClosedAndBroken"
    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_CLOSED

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    def reconcile(self, intent: RoutingIntent) -> None:
        raise RuntimeError("broken")


def test_a_fail_closed_plug_in_failing_on_full_backends_rejects() -> None:
    eng = engine(
        [backend("a", maxConcurrency=1)],
        [policy("p", reconcilers=[{"name": "broken", "config": {}}])],
        plugins={"broken": ClosedAndBroken},
    )
    eng.registry.runtime.backend("default", "a").in_flight = 1
    decision = eng.explain(REQ)
    assert (decision.outcome, decision.reason) == (Outcome.REJECTED, reasons.RECONCILER_FAILED)


def test_explaining_a_queue_leaves_the_round_robin_counter_alone() -> None:
    eng = engine(
        [backend("a", maxConcurrency=1), backend("b", maxConcurrency=1)],
        [policy("p", reconcilers=LATENCY_CAP, selection={"strategy": "roundRobin"})],
    )
    runtime = eng.registry.runtime
    for name in ("a", "b"):
        runtime.backend("default", name).in_flight = 1
    assert eng.route(REQ).outcome is Outcome.QUEUED
    assert runtime.round_robin == {}


class AsyncLatencyCap:
    """The latency plug-in as a coroutine: the async pipeline runs the same capacity check."""

    name: ClassVar[str] = "AsyncLatencyCap"
    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_OPEN

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    async def reconcile(self, intent: RoutingIntent) -> None:
        for candidate in list(intent.candidate_backends):
            if (candidate.latency_ms or 0.0) > 200:
                intent.exclude(candidate, reason_code="slow", reason="too slow")


async def test_the_async_pipeline_rejects_a_full_backend_a_plug_in_would_exclude() -> None:
    eng = engine(
        [backend("a", maxConcurrency=1), backend("b", maxConcurrency=1)],
        [policy("p", reconcilers=[{"name": "cap", "config": {}}])],
        plugins={"cap": AsyncLatencyCap},
    )
    runtime = eng.registry.runtime
    runtime.backend("default", "a").latency_ms = 900.0
    for name in ("a", "b"):
        runtime.backend("default", name).in_flight = 1
    assert (await eng.explain_async(REQ)).outcome is Outcome.QUEUED
    runtime.backend("default", "b").latency_ms = 900.0
    decision = await eng.explain_async(REQ)
    assert decision.outcome is Outcome.REJECTED
    assert {r.reason_code for r in decision.rejections} == {"slow"}
