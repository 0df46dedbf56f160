"""SPEC §3 step 9: the selection strategies and their reason formats."""

from __future__ import annotations

from routing_factories import backend, engine, policy

from nexus_operator.api import STRATEGY_SUMMARIES, RoutingPolicy, Selection, Strategy
from nexus_operator.pipeline import reasons
from nexus_operator.pipeline.strategies import PICKS
from nexus_operator.routing import RequestRequirements

REQ = RequestRequirements(model="llama3:8b")


def strategy(name: str, **selection: object) -> RoutingPolicy:
    return policy("p", selection={"strategy": name, **selection})


def test_smart_score_combines_priority_load_and_latency() -> None:
    eng = engine([backend("a", priority=20), backend("b", priority=10)])
    runtime = eng.registry.runtime
    runtime.backend("default", "a").latency_ms = 100.0
    runtime.backend("default", "b").latency_ms = 500.0
    runtime.backend("default", "b").in_flight = 20
    # a: (80·50 + 100·30 + 90·20)/100 = 88.0; b: (90·50 + 80·30 + 50·20)/100 = 79.0
    assert eng.route(REQ).reason == "highest_score:a:88.0"


def test_smart_custom_weights() -> None:
    eng = engine(
        [backend("a", priority=20), backend("b", priority=10)],
        [strategy("smart", weights={"priority": 0, "load": 0, "latency": 100})],
    )
    eng.registry.runtime.backend("default", "b").latency_ms = 250.0
    assert eng.route(REQ).reason == "highest_score:a:100.0"


def test_smart_ties_go_to_name_ascending() -> None:
    eng = engine([backend("zeta", priority=30), backend("alpha", priority=30)])
    assert eng.route(REQ).reason == "highest_score:alpha:85.0"


def test_smart_tie_across_priorities_goes_to_name_ascending() -> None:
    eng = engine([backend("b-low-prio", priority=10), backend("a-high-prio", priority=20)])
    eng.registry.runtime.backend("default", "b-low-prio").in_flight = 17
    # b: (90·50 + 83·30 + 100·20)/100 = 89.9 ; a: (80·50 + 100·30 + 100·20)/100 = 90.0
    assert eng.route(REQ).reason == "highest_score:a-high-prio:90.0"


def test_ttft_above_the_threshold_scales_the_score_down() -> None:
    eng = engine(
        [backend("slow-start", priority=0), backend("other", priority=40)],
        [policy("p", quality={"ttftPenaltyThresholdMs": 1000})],
    )
    eng.registry.runtime.backend("default", "slow-start").ttft_ms = 1500.0
    # slow-start: 100 · (1 − 0.5) = 50.0 ; other: (60·50 + 3000 + 2000)/100 = 80.0
    assert eng.route(REQ).reason == "highest_score:other:80.0"


def test_ttft_penalty_is_disabled_by_a_zero_threshold() -> None:
    eng = engine(
        [backend("slow-start", priority=0), backend("other", priority=40)],
        [policy("p", quality={"ttftPenaltyThresholdMs": 0})],
    )
    eng.registry.runtime.backend("default", "slow-start").ttft_ms = 60_000.0
    assert eng.route(REQ).reason == "highest_score:slow-start:100.0"


def test_round_robin_cycles_through_candidates_in_name_order() -> None:
    eng = engine([backend("c"), backend("a"), backend("b")], [strategy("roundRobin")])
    picks = [eng.route(REQ).reason for _ in range(4)]
    assert picks == ["round_robin:a", "round_robin:b", "round_robin:c", "round_robin:a"]


def test_round_robin_counter_does_not_advance_on_explain() -> None:
    eng = engine([backend("a"), backend("b")], [strategy("roundRobin")])
    assert [eng.explain(REQ).reason for _ in range(2)] == ["round_robin:a"] * 2
    assert eng.route(REQ).reason == "round_robin:a"


def test_round_robin_counter_does_not_advance_on_only_candidate() -> None:
    eng = engine([backend("a"), backend("b", draining=True)], [strategy("roundRobin")])
    assert eng.route(REQ).reason == reasons.ONLY_CANDIDATE
    assert eng.registry.runtime.round_robin == {}


def test_round_robin_counter_survives_snapshot_changes() -> None:
    eng = engine([backend("a"), backend("b")], [strategy("roundRobin")])
    eng.route(REQ)
    eng.registry.upsert_backend(backend("c", models=["other"]))
    assert eng.route(REQ).reason == "round_robin:b"


def test_priority_only_picks_the_lowest_priority_then_name() -> None:
    eng = engine(
        [
            backend("b", priority=5),
            backend("a", priority=5),
            backend("c", priority=1, draining=True),
        ],
        [strategy("priorityOnly")],
    )
    assert eng.route(REQ).reason == "priority:a:5"


def test_random_picks_among_all_the_candidates() -> None:
    eng = engine([backend("a"), backend("b")], [strategy("random")])
    # 40 fair draws all landing on one backend has odds of 2 in 2**40.
    assert {eng.route(REQ).reason for _ in range(40)} == {"random:a", "random:b"}


def test_least_latency_picks_the_lowest_ema_rounded_in_the_reason() -> None:
    eng = engine([backend("a"), backend("b"), backend("c")], [strategy("leastLatency")])
    for name, latency in {"a": 80.6, "b": 42.4, "c": 42.4}.items():
        eng.registry.runtime.backend("default", name).latency_ms = latency
    assert eng.route(REQ).reason == "least_latency:b:42"


def test_exactly_one_candidate_is_only_candidate_whatever_the_strategy() -> None:
    for name in ("smart", "roundRobin", "priorityOnly", "random", "leastLatency"):
        eng = engine([backend("solo")], [strategy(name)])
        assert eng.route(REQ).reason == reasons.ONLY_CANDIDATE


def test_every_strategy_has_a_pick_function_and_a_summary() -> None:
    assert set(PICKS) == set(Strategy) == set(STRATEGY_SUMMARIES)


def test_the_strategy_field_is_described_from_the_summaries() -> None:
    description = Selection.model_fields["strategy"].description or ""
    for strategy, summary in STRATEGY_SUMMARIES.items():
        assert f"{strategy.value}: {summary}" in description
