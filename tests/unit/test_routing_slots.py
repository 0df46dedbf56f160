"""In-flight slots: one usage report releases exactly its own Route's slot, never another's."""

from __future__ import annotations

import gc
import random
from datetime import datetime, timedelta

from routing_factories import NOW, backend, engine, policy

from nexus_operator.pipeline import BackendRuntime
from nexus_operator.routing import RequestRequirements, RoutingEngine, UsageReport
from nexus_operator.routing.slots import SlotLedger


def route(eng: RoutingEngine, request_id: str | None) -> None:
    eng.route(RequestRequirements(model="llama3:8b", request_id=request_id))


def report(eng: RoutingEngine, request_id: str | None, *, cost_usd: float | None = None) -> None:
    eng.report_usage(
        UsageReport(backend="a", model="llama3:8b", request_id=request_id, cost_usd=cost_usd)
    )


def in_flight(eng: RoutingEngine) -> int:
    return eng.registry.runtime.backend("default", "a").in_flight


def test_a_duplicate_report_does_not_free_another_requests_slot() -> None:
    eng = engine([backend("a")], [policy("p")])
    route(eng, "a")
    route(eng, "b")
    report(eng, "a")
    report(eng, "a")
    assert in_flight(eng) == 1


def test_a_report_with_an_unknown_id_frees_no_slot_but_still_counts_spend() -> None:
    eng = engine([backend("a")], [policy("p")])
    route(eng, "a")
    report(eng, "never-routed", cost_usd=0.5)
    assert in_flight(eng) == 1
    assert eng.registry.runtime.policy("default", "p").spent_usd == 0.5


def test_a_reused_request_id_keeps_both_slots_and_each_report_frees_one() -> None:
    eng = engine([backend("a")], [policy("p")])
    route(eng, "c")
    route(eng, "c")
    assert in_flight(eng) == 2
    report(eng, "c")
    assert in_flight(eng) == 1
    report(eng, "c")
    report(eng, "c")
    assert in_flight(eng) == 0


def test_a_report_without_an_id_frees_a_slot_taken_without_one_first() -> None:
    eng = engine([backend("a")], [policy("p")])
    route(eng, "a")
    route(eng, None)
    report(eng, None)
    assert in_flight(eng) == 1
    report(eng, "a")
    assert in_flight(eng) == 0


def test_an_expired_slot_is_not_released_again_by_its_late_report() -> None:
    eng = engine([backend("a")], [policy("p")])
    route(eng, "old")
    assert eng.expire_slots(NOW + timedelta(seconds=300)) == 1
    route(eng, "new")
    report(eng, "old")
    assert in_flight(eng) == 1


def test_open_slots_cost_the_garbage_collector_nothing() -> None:
    """A Route-only client leaves a slot open per call until expiry; with tens of thousands
    open, each tracked by the collector would lengthen every full collection."""
    eng = engine([backend("a")], [policy("p")])
    route(eng, "warm")
    gc.collect()
    before = len(gc.get_objects())
    for index in range(2000):
        route(eng, f"r-{index}" if index % 2 else None)
    gc.collect()
    assert in_flight(eng) == 2001
    assert len(gc.get_objects()) - before < 2000 // 10  # bounded records, not one per slot


def test_expiry_releases_exactly_the_stale_slots_even_when_the_clock_steps_back() -> None:
    """Expiry stops at the first fresh slot while slots are in time order; after the clock
    steps back it still releases exactly the slots taken at or before now − timeout."""
    rng = random.Random(7)
    ledger = SlotLedger(timedelta(seconds=10))
    cell = BackendRuntime()
    taken: dict[str, datetime] = {}
    clock = NOW
    for step in range(600):
        clock += timedelta(seconds=rng.choice([0, 1, 1, 2, 3, -30 if step % 97 == 0 else 1]))
        request_id = f"r{step}"
        assert ledger.take(cell, ("default", "a"), request_id=request_id, now=clock)
        taken[request_id] = clock
        if rng.random() < 0.2:
            gone = rng.choice(sorted(taken))
            assert ledger.release(("default", "a"), gone)
            del taken[gone]
        if step % 5 == 0:
            horizon = clock - timedelta(seconds=10)
            stale = [r for r, at in taken.items() if at <= horizon]
            assert ledger.expire(clock) == len(stale)
            for request_id in stale:
                del taken[request_id]
            assert len(ledger) == len(taken) == cell.in_flight
