"""SPEC §3 step 9: roundRobin and leastLatency work on candidates in name order, whatever
order a plug-in left them in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from routing_factories import backend, engine, policy

from nexus_operator.pipeline import ReconcileErrorPolicy, RoutingIntent
from nexus_operator.routing import RequestRequirements

REQ = RequestRequirements(model="llama3:8b")


class Reverser:
    """Reverses the candidate order without excluding anything."""

    name: ClassVar[str] = "Reverser"
    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_OPEN

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    def reconcile(self, intent: RoutingIntent) -> None:
        intent.candidate_backends = intent.candidate_backends[::-1]


def reversing(strategy: str) -> Any:
    return policy(
        "p", reconcilers=[{"name": "reverse", "config": {}}], selection={"strategy": strategy}
    )


def test_round_robin_walks_names_in_order_after_a_plug_in_reorders_them() -> None:
    eng = engine(
        [backend("a"), backend("b"), backend("c")],
        [reversing("roundRobin")],
        plugins={"reverse": Reverser},
    )
    picks = [eng.route(REQ).reason for _ in range(3)]
    assert picks == ["round_robin:a", "round_robin:b", "round_robin:c"]


def test_least_latency_ties_go_to_name_ascending_after_a_plug_in_reorders_them() -> None:
    eng = engine(
        [backend("a"), backend("b")],
        [reversing("leastLatency")],
        plugins={"reverse": Reverser},
    )
    for name in ("a", "b"):
        eng.registry.runtime.backend("default", name).latency_ms = 40.0
    assert eng.explain(REQ).reason == "least_latency:a:40"


class ExcludesThenRestores:
    """Excludes `a` through the intent, then puts the whole plan back."""

    name: ClassVar[str] = "ExcludesThenRestores"
    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_OPEN

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    def reconcile(self, intent: RoutingIntent) -> None:
        assert intent.plan is not None
        [first, *_] = intent.plan.candidates
        intent.exclude(first, reason_code="slow", reason="too slow")
        intent.candidate_backends = list(intent.plan.candidates)


def test_a_backend_a_plug_in_excluded_stays_out_when_it_puts_it_back() -> None:
    eng = engine(
        [backend("a", priority=1), backend("b", priority=90)],
        [
            policy(
                "p",
                reconcilers=[{"name": "undo", "config": {}}],
                selection={"strategy": "priorityOnly"},
            )
        ],
        plugins={"undo": ExcludesThenRestores},
    )
    decision = eng.explain(REQ)
    assert decision.reason == "only_candidate"
    assert [e.backend for e in decision.exclusions] == ["a"]
