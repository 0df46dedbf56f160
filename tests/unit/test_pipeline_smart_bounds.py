"""The smart strategy's cached score bounds never change a pick: over random fleets and random
runtime histories (slots taken and released, counts set, latency and TTFT moved, cells bound to
counters shared with other processes), pick_smart with a plan picks exactly what scoring every
candidate picks."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st
from routing_factories import backend

from nexus_operator.pipeline import (
    BackendView,
    Candidate,
    CandidatePlan,
    RoutingIntent,
    RuntimeState,
)
from nexus_operator.pipeline import plan as plans
from nexus_operator.pipeline.runtime import BackendRuntime
from nexus_operator.pipeline.strategies import Pick, SmartWeights, pick_smart
from nexus_operator.routing import RequestRequirements

MODEL = "m1"
WEIGHTS = (SmartWeights(), SmartWeights(priority=0, load=50, latency=50), SmartWeights(100, 0, 0))


class Selector:
    def __init__(self, weights: SmartWeights, threshold: int) -> None:
        self.weights = weights
        self.ttft_penalty_threshold_ms = threshold
        self.rng = random.Random(0)

    def take_turn(self, intent: RoutingIntent) -> int:
        return 0


class OtherProcesses:
    """Counters shared with other serving processes: they change without this process knowing."""

    def __init__(self, rows: int) -> None:
        self.values = [0] * rows

    def try_take(self, row: int, cap: int | None) -> bool:
        if cap is not None and self.values[row] >= cap:
            return False
        self.values[row] += 1
        return True

    def release(self, row: int) -> None:
        self.values[row] = max(0, self.values[row] - 1)


def score_everyone(
    candidates: list[Candidate], excluded: set[str], *, selector: Selector, penalize_open: bool
) -> str:
    """The SPEC's formula applied to every candidate: the highest score, ties by name."""
    w, t = selector.weights, selector.ttft_penalty_threshold_ms
    best: tuple[float, str] | None = None
    for c in candidates:
        if c.backend.name in excluded:
            continue
        runtime = c.runtime
        p_prio = 100 - min(c.backend.priority, 100)
        p_load = 100 - min(runtime.in_flight, 100)
        latency = runtime.latency_ms
        p_lat = 100.0 if latency is None else 100 - min(latency / 10, 100)
        score = (p_prio * w.priority + p_load * w.load + p_lat * w.latency) / 100
        if penalize_open and c.backend.is_open:
            score /= 2
        ttft = runtime.ttft_ms
        if ttft is not None and 0 < t < ttft:
            score *= 1 - min((ttft - t) / t, 1.0)
        if best is None or score > best[0] or (score == best[0] and c.backend.name < best[1]):
            best = (score, c.backend.name)
    assert best is not None
    return f"highest_score:{best[1]}:{best[0]:.1f}"


def change_runtime(
    step: dict[str, Any], cells: list[BackendRuntime], shared: OtherProcesses
) -> None:
    cell = cells[step["cell"] % len(cells)]
    kind = step["kind"]
    if kind == "take":
        for _ in range(step["amount"]):
            cell.try_take()
    elif kind == "release":
        for _ in range(step["amount"]):
            cell.release_slot()
    elif kind == "set":
        cell.in_flight = step["amount"] * 7
    elif kind == "latency":
        cell.latency_ms = step["latency"]
    elif kind == "ttft":
        cell.ttft_ms = step["latency"]
    elif kind == "bind":
        cell.bind_in_flight(shared, step["cell"] % len(cells))
    elif kind == "elsewhere":  # another process takes or releases on a shared row
        row = step["cell"] % len(cells)
        shared.values[row] = max(0, shared.values[row] + step["amount"] - 20)


FLEET = st.lists(
    st.fixed_dictionaries(
        {
            "priority": st.integers(0, 100),
            "type": st.sampled_from(["ollama", "openai"]),
            "in_flight": st.sampled_from([0, 1, 5, 99, 100, 101, 150]),
        }
    ),
    min_size=2,
    max_size=12,
)
STEP = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(
            [
                "take",
                "take",
                "release",
                "release",
                "set",
                "latency",
                "latency",
                "ttft",
                "bind",
                "elsewhere",
            ]
        ),
        "cell": st.integers(0, 11),
        "amount": st.integers(0, 40),
        "latency": st.sampled_from([None, 0.0, 5.0, 250.0, 999.0, 1000.0, 4000.0]),
    }
)
DECISION = st.fixed_dictionaries(
    {
        "excluded": st.sets(st.integers(0, 11), max_size=4),
        "penalize_open": st.booleans(),
        "threshold": st.sampled_from([0, 100, 3000]),
    }
)


@settings(max_examples=500, deadline=None)
@given(
    fleet=FLEET,
    history=st.lists(st.tuples(st.lists(STEP, max_size=4), DECISION), min_size=1, max_size=25),
    weights=st.sampled_from(WEIGHTS),
    shared_ok=st.sampled_from([False, False, True]),
    long_scan=st.sampled_from([0, 0, 0, 2, plans.LONG_SCAN]),
)
def test_smart_pick_with_plan_bounds_equals_scoring_every_candidate(
    fleet: list[dict[str, Any]],
    history: list[tuple[list[dict[str, Any]], dict[str, Any]]],
    weights: SmartWeights,
    shared_ok: bool,
    long_scan: int,
) -> None:
    """`long_scan`: how long a fresh scan must be before the plan keeps bounds (0: always)."""
    with mock.patch.object(plans, "LONG_SCAN", long_scan):
        check_history(fleet, history, weights=weights, shared_ok=shared_ok)


def check_history(
    fleet: list[dict[str, Any]],
    history: list[tuple[list[dict[str, Any]], dict[str, Any]]],
    *,
    weights: SmartWeights,
    shared_ok: bool,
) -> None:
    state = RuntimeState()
    candidates = []
    for index, spec in enumerate(fleet):
        name = f"b{index:02d}"
        view = BackendView.from_api(
            backend(name, models=[MODEL], priority=spec["priority"], type=spec["type"])
        )
        cell = state.backend("default", name)
        cell.in_flight = spec["in_flight"]
        candidates.append(Candidate(view, view.models[MODEL], cell))
    plan = CandidatePlan(model=MODEL, candidates=candidates, filters=())
    cells = [c.runtime for c in plan.candidates]
    shared = OtherProcesses(len(cells))
    for steps, decision in history:
        for step in steps:
            if step["kind"] in ("bind", "elsewhere") and not shared_ok:
                continue
            change_runtime(step, cells, shared=shared)
        excluded = {plan.candidates[i].backend.name for i in decision["excluded"] if i < len(cells)}
        if len(excluded) == len(cells):
            continue
        intent = RoutingIntent(RequestRequirements(model=MODEL), plan.candidates, plan=plan)
        intent.annotations.penalize_open = decision["penalize_open"]
        for c in plan.candidates:
            if c.backend.name in excluded:
                intent.exclude(c, reason_code="test", reason="excluded by the test")
        selector = Selector(weights, decision["threshold"])
        pick: Pick = pick_smart(intent, intent.candidate_backends, selector=selector)
        expected = score_everyone(
            list(plan.candidates),
            excluded,
            selector=selector,
            penalize_open=decision["penalize_open"],
        )
        assert pick.reason == expected
        assert pick.reason.split(":")[1] == pick.candidate.backend.name


def two_backends() -> tuple[BackendRuntime, BackendRuntime, Callable[[], str]]:
    """Backends a and b (priority 10) in one plan, and the smart pick's reason over them."""
    state = RuntimeState()
    views = [BackendView.from_api(backend(n, models=[MODEL], priority=10)) for n in ("a", "b")]
    candidates = [Candidate(v, v.models[MODEL], state.backend("default", v.name)) for v in views]
    plan = CandidatePlan(model=MODEL, candidates=candidates, filters=())
    selector = Selector(SmartWeights(), 0)

    def pick() -> str:
        intent = RoutingIntent(RequestRequirements(model=MODEL), plan.candidates, plan=plan)
        return pick_smart(intent, intent.candidate_backends, selector=selector).reason

    a, b = (c.runtime for c in plan.candidates)
    return a, b, pick


@mock.patch.object(plans, "LONG_SCAN", 0)
def test_smart_pick_sees_a_release_after_scans_tightened_the_bounds() -> None:
    a, b, pick = two_backends()
    a.in_flight, b.in_flight = 150, 120
    assert pick() == pick() == "highest_score:a:65.0"  # both saturated: the tie goes to a
    for _ in range(30):
        b.release_slot()
    # b: (90·50 + 10·30 + 100·20)/100 = 68.0
    assert pick() == "highest_score:b:68.0"


@mock.patch.object(plans, "LONG_SCAN", 0)
def test_smart_pick_sees_a_lowered_latency_after_scans_tightened_the_bounds() -> None:
    a, b, pick = two_backends()
    a.latency_ms, b.latency_ms = 500.0, 800.0
    assert pick() == pick() == "highest_score:a:85.0"  # a: (90·50 + 100·30 + 50·20)/100
    b.latency_ms = 100.0
    assert pick() == "highest_score:b:93.0"  # b: (90·50 + 100·30 + 90·20)/100
