"""The usage spool (replay, torn lines, compaction, identity), the status-write token bucket and
the writer's priorities."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from nexus_operator.operator.rate_limit import TokenBucket
from nexus_operator.operator.spool import Spool, store_identity, stored_identity
from nexus_operator.operator.status_writer import COUNTERS, SPEND, URGENT, priority_of

KEY = ("routingpolicies", "ns", "rp")


def _entry(usd: float) -> dict[str, Any]:
    return {"replica": "r", "period": "2026-03", "spentUsd": usd, "routed": 0}


class Totals:
    def __init__(self) -> None:
        self.usd = 0.0

    def records(self) -> list[tuple[tuple[str, str, str], tuple[str, dict[str, Any]]]]:
        return [(KEY, ("uid-1", _entry(self.usd)))] if self.usd else []


async def test_spool_replays_the_last_totals_of_each_object(tmp_path: Path) -> None:
    totals = Totals()
    spool = Spool(tmp_path, replica="r", snapshot=totals.records)
    for usd in (0.5, 1.25, 2.0):
        totals.usd = usd
        await spool.sync()
    await spool.sync()  # unchanged: no new line
    assert spool.batches == 3
    replayed = Spool(tmp_path, replica="r", snapshot=list).load()
    assert replayed == {KEY: ("uid-1", _entry(2.0))}


async def test_spool_skips_a_torn_last_line_and_other_replicas_lines(tmp_path: Path) -> None:
    totals = Totals()
    spool = Spool(tmp_path, replica="r", snapshot=totals.records)
    totals.usd = 1.0
    await spool.sync()
    with spool.path.open("ab") as file:
        file.write(
            b'{"replica":"other","key":["routingpolicies","ns","rp"],"uid":"u","entry":{}}\n'
        )
        file.write(b'{"replica":"r","key":["routingpo')
    assert Spool(tmp_path, replica="r", snapshot=list).load() == {KEY: ("uid-1", _entry(1.0))}


async def test_spool_compacts_to_the_latest_line_per_object(tmp_path: Path) -> None:
    totals = Totals()
    spool = Spool(tmp_path, replica="r", snapshot=totals.records, max_bytes=400)
    for step in range(1, 30):
        totals.usd = step * 0.25
        await spool.sync()
    assert spool.path.stat().st_size <= 400
    assert Spool(tmp_path, replica="r", snapshot=list).load()[KEY][1]["spentUsd"] == 29 * 0.25


def test_replica_identity_is_pinned_in_the_spool_directory(tmp_path: Path) -> None:
    assert stored_identity(tmp_path) is None
    store_identity(tmp_path, "pod-a")
    assert stored_identity(tmp_path) == "pod-a"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_token_bucket_lets_through_at_most_burst_plus_rate_times_window() -> None:
    clock = FakeClock()
    bucket = TokenBucket(qps=5, burst=2, clock=clock)
    for _ in range(2):
        await bucket.acquire()
    assert bucket.wait_s() == 0.2
    clock.now = 1.0  # five more tokens accrue, capped at the burst of two
    for _ in range(2):
        await bucket.acquire()
    assert bucket.wait_s() > 0


async def test_token_bucket_waits_for_its_next_token() -> None:
    bucket = TokenBucket(qps=200, burst=1)
    await bucket.acquire()
    await asyncio.wait_for(bucket.acquire(), timeout=5)


def test_conditions_health_and_budget_state_outrank_spend_which_outranks_counters() -> None:
    assert priority_of({"conditions": []}) == URGENT
    assert priority_of({"health": {"state": "Unhealthy"}, "replicas": []}) == URGENT
    assert priority_of({"budget": {"state": "HardLimit", "spentUsd": 1.0}}) == URGENT
    assert priority_of({"budget": {"spentUsd": 1.0}, "replicas": []}) == SPEND
    assert priority_of({"replicas": [], "decisions": {"routed": 3}}) == COUNTERS
    assert priority_of({"routing": {"selectedTotal": 3}, "replicas": []}) == COUNTERS
