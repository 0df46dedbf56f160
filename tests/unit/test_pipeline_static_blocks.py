"""A plan's static exclusions are shared by every decision, and counted once per plan."""

from __future__ import annotations

from collections import Counter

import pytest
from routing_factories import backend, engine, model, policy

from nexus_operator.pipeline import Exclusion, reasons
from nexus_operator.routing import Decision, Outcome, RequestRequirements, RoutingEngine
from nexus_operator.serving import responses

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


def rendered_one_by_one(exclusions: list[Exclusion]) -> list[bytes]:
    return [r.SerializeToString() for r in responses.rejections(exclusions)]


@pytest.mark.parametrize(
    "req",
    [
        RequestRequirements(model="llama3:8b"),
        RequestRequirements(model="llama3:8b", needs_vision=True),
        RequestRequirements(model="llama3:8b", only_backends=frozenset({"e-good"})),
    ],
    ids=["routed", "rejected", "subset"],
)
def test_responses_list_every_exclusion_in_order_when_the_plan_block_is_prerendered(
    req: RequestRequirements,
) -> None:
    eng = fleet()
    for _ in range(2):  # the second decision renders the plan's block from the cache
        decision = eng.explain(req)
        assert decision.shared_exclusions
        explained = responses.explanation(decision)
        assert [e.SerializeToString() for e in explained.exclusions] == rendered_one_by_one(
            decision.exclusions
        )
        routed = responses.route_response(decision)
        assert [r.SerializeToString() for r in routed.rejections] == rendered_one_by_one(
            decision.rejections
        )
        assert explained.decision == routed
        assert list(explained.trace) == [responses._trace_entry(t) for t in decision.trace]
