"""only_backends (the gateway's subset hint): nothing outside it is chosen, and fallbacks keep it."""

from __future__ import annotations

from routing_factories import backend, codes, engine, policy

from nexus_operator.routing import Outcome, RequestRequirements


def test_only_backends_inside_the_subset_are_candidates() -> None:
    routing = engine([backend("a", priority=1), backend("b", priority=90)])
    decision = routing.route(RequestRequirements("llama3:8b", only_backends=frozenset({"b"})))
    assert decision.backend is not None
    assert decision.backend.name == "b"
    assert codes(decision) == {"a": "outside_subset_hint"}


def test_an_empty_subset_rejects_with_the_reason_per_backend() -> None:
    routing = engine([backend("a"), backend("b")])
    decision = routing.route(RequestRequirements("llama3:8b", only_backends=frozenset()))
    assert decision.outcome is Outcome.REJECTED
    assert codes(decision) == {"a": "outside_subset_hint", "b": "outside_subset_hint"}


def test_a_fallback_stays_inside_the_subset() -> None:
    routing = engine(
        [backend("a", models=["big"], draining=True), backend("b", models=["small"])],
        [policy("p", ["big"], fallbacks=["small"])],
    )
    decision = routing.route(RequestRequirements("big", only_backends=frozenset({"a"})))
    assert decision.outcome is Outcome.REJECTED
    assert codes(decision) == {"a": "draining", "b": "outside_subset_hint"}
