"""A plan's static exclusions are shared by every decision, and counted once per plan."""

from __future__ import annotations

from collections import Counter

import pytest
from routing_factories import backend, engine, model, policy

from nexus_operator.pipeline import reasons
from nexus_operator.routing import Decision, Outcome, RequestRequirements, RoutingEngine

SMALL = [model("llama3:8b", contextLength=2048)]


def fleet() -> RoutingEngine:
    return engine(
        [
            backend("a-draining", draining=True),
            backend("b-cloud", type="openai"),
            backend("c-tier1", tier=1),
            backend("d-small", tier=3, models=SMALL),
            backend("e-good", tier=3),
            backend("f-good", tier=4, maxConcurrency=1),
        ],
        [
            policy(
                "private",
                privacy="restricted",
                minTier=2,
                requiredCapabilities={"minContextLength": 4096},
            )
        ],
    )


def tally(decision: Decision) -> Counter[tuple[str, str]]:
    return Counter((e.reconciler, e.reason_code) for e in decision.exclusions)


def test_decisions_share_the_plans_static_exclusions_instead_of_copying_them() -> None:
    eng = fleet()
    first = eng.explain(RequestRequirements(model="llama3:8b"))
    second = eng.explain(RequestRequirements(model="llama3:8b"))
    assert [e.backend for e in first.exclusions] == ["a-draining", "b-cloud", "c-tier1", "d-small"]
    assert all(x is y for x, y in zip(first.exclusions, second.exclusions, strict=True))
    assert first.backend is not None
    assert first.backend.name == "e-good"


@pytest.mark.parametrize(
    "req",
    [
        RequestRequirements(model="llama3:8b"),
        RequestRequirements(model="llama3:8b", needs_vision=True),
        RequestRequirements(model="llama3:8b", min_tier=4),
        RequestRequirements(model="llama3:8b", estimated_tokens=5000),
        RequestRequirements(model="llama3:8b", only_backends=frozenset({"e-good"})),
        RequestRequirements(model="gpt-none"),
    ],
    ids=["static-only", "vision", "tier", "context", "subset", "unknown-model"],
)
def test_exclusion_counts_equal_the_exclusions_counted_one_by_one(
    req: RequestRequirements,
) -> None:
    decision = fleet().route(req)
    assert decision.exclusion_counts is not None
    assert decision.exclusion_counts == tally(decision)


def test_exclusion_counts_stay_exact_when_capacity_holds_the_last_backend() -> None:
    eng = fleet()
    req = RequestRequirements(model="llama3:8b", only_backends=frozenset({"f-good"}))
    assert eng.route(req).outcome is Outcome.ROUTED
    queued = eng.route(req)
    assert queued.outcome is Outcome.QUEUED
    assert queued.exclusion_counts == tally(queued)
    assert queued.count_exclusions()[("LifecycleReconciler", reasons.OUTSIDE_SUBSET_HINT)] == 4
