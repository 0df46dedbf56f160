"""The budget ledger's pure parts: absolute per-replica entries, their sums, rollover, states."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from nexus_operator import api
from nexus_operator.api import BudgetState
from nexus_operator.operator.budget_ledger import (
    backend_desired,
    budget_state,
    next_reset,
    policy_desired,
)
from nexus_operator.operator.diffing import merge_diff
from nexus_operator.operator.status_writer import closing_in
from nexus_operator.pipeline.runtime import PolicyRuntime, RoutedRecord

MARCH = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
APRIL = datetime(2026, 4, 1, 0, 0, 1, tzinfo=UTC)
LIMIT = api.Budget(monthly_limit_usd=100.0, soft_limit_percent=75)


def _entry(
    replica: str, period: str = "2026-03", usd: float = 0.0, routed: int = 0, **more: Any
) -> dict[str, Any]:
    return {
        "replica": replica,
        "period": period,
        "spentUsd": usd,
        "routed": routed,
        "rejected": 0,
        "queued": 0,
        **more,
    }


def policy_patch(
    status: dict[str, Any],
    mine: dict[str, Any] | None,
    *,
    budget: api.Budget | None,
    now: datetime,
    last: RoutedRecord | None = None,
) -> dict[str, Any]:
    desired = policy_desired(
        status, mine, replica="me", records=(last, None), budget=budget, now=now
    )
    return merge_diff(status, desired)


def _applied(status: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(status)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _applied(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.mark.parametrize(
    ("spent", "state"),
    [(74.99, BudgetState.NORMAL), (75.0, BudgetState.SOFT_LIMIT), (100.0, BudgetState.HARD_LIMIT)],
)
def test_budget_thresholds_are_inclusive(spent: float, state: BudgetState) -> None:
    assert budget_state(spent, LIMIT) is state


def test_policy_without_a_limit_is_always_normal() -> None:
    assert budget_state(1e6, api.Budget()) is BudgetState.NORMAL


def test_own_entry_is_set_absolutely_and_the_sums_include_every_replica() -> None:
    status = {"replicas": [_entry("other", usd=10.5, routed=7), _entry("me", usd=1.0, routed=1)]}
    patch = policy_patch(status, _entry("me", usd=2.25, routed=3), budget=LIMIT, now=MARCH)
    assert patch["budget"]["spentUsd"] == 12.75
    assert patch["budget"]["utilizationPercent"] == 12.75
    assert patch["decisions"]["routed"] == 10
    assert {e["replica"]: e["spentUsd"] for e in patch["replicas"]} == {"other": 10.5, "me": 2.25}


def test_the_same_totals_written_again_add_nothing() -> None:
    """A retry after a lost answer re-reads the applied write: the patch is then empty."""
    mine = _entry("me", usd=2.25, routed=3)
    status = {"replicas": [_entry("other", usd=10.5, routed=7)]}
    applied = _applied(status, policy_patch(status, mine, budget=LIMIT, now=MARCH))
    assert policy_patch(applied, mine, budget=LIMIT, now=MARCH) == {}
    assert applied["budget"]["spentUsd"] == 12.75


def test_a_status_from_before_entries_is_kept_as_one_legacy_entry() -> None:
    status = {
        "budget": {"period": "2026-03", "spentUsd": 10.5, "limitUsd": 100.0},
        "decisions": {"routed": 7, "rejected": 1, "queued": 0},
    }
    patch = policy_patch(status, _entry("me", usd=1.0, routed=2), budget=LIMIT, now=MARCH)
    assert patch["budget"]["spentUsd"] == 11.5
    assert patch["decisions"]["routed"] == 9
    assert [e["replica"] for e in patch["replicas"]] == ["legacy", "me"]


def test_new_month_sums_this_period_and_keeps_the_previous_one_exact() -> None:
    status = {"replicas": [_entry("other", "2026-03", 50.0), _entry("me", "2026-03", 30.0)]}
    mine = _entry("me", "2026-04", 1.0, previousPeriod="2026-03", previousSpentUsd=30.0)
    patch = policy_patch(status, mine, budget=LIMIT, now=APRIL)
    assert patch["budget"]["period"] == "2026-04"
    assert patch["budget"]["spentUsd"] == 1.0
    assert patch["budget"]["previousPeriod"] == "2026-03"
    assert patch["budget"]["previousSpentUsd"] == 80.0
    assert patch["budget"]["state"] == "Normal"
    assert patch["budget"]["resetsAt"] == "2026-05-01T00:00:00Z"


def test_entries_silent_for_over_a_month_fold_into_retired_counters() -> None:
    status = {"replicas": [_entry("gone", "2026-01", 5.0, routed=4)]}
    patch = policy_patch(status, _entry("me", "2026-03", 1.0, routed=1), budget=LIMIT, now=MARCH)
    assert [e["replica"] for e in patch["replicas"]] == ["me"]
    assert patch["retired"]["routed"] == 4
    assert patch["decisions"]["routed"] == 5
    assert patch["budget"]["spentUsd"] == 1.0


def test_nothing_is_written_when_nothing_changed_and_the_block_is_current() -> None:
    first = policy_patch({}, None, budget=LIMIT, now=MARCH)
    assert policy_patch(first, None, budget=LIMIT, now=MARCH) == {}


def test_policy_without_a_limit_gets_no_budget_block() -> None:
    status = {"budget": {"period": "2026-03"}, "replicas": []}
    patch = policy_patch(status, _entry("me", usd=1.0, routed=1), budget=None, now=MARCH)
    assert patch["budget"] is None
    assert patch["decisions"]["routed"] == 1


def test_last_routed_keeps_the_newer_record_of_two_replicas() -> None:
    theirs = {"time": "2026-03-14T12:30:00Z", "model": "m", "backend": "b", "reason": "r"}
    mine = RoutedRecord(time=MARCH, model="m", backend="a", reason="only_candidate")
    status = {"decisions": {"lastRouted": theirs}, "replicas": []}
    patch = policy_patch(status, _entry("me", routed=1), budget=None, now=MARCH, last=mine)
    assert "lastRouted" not in patch["decisions"]


def test_selection_entries_sum_and_keep_the_latest_time() -> None:
    theirs = {"replica": "other", "selected": 5, "lastSelectedTime": "2026-03-14T13:00:00Z"}
    status = {
        "replicas": [theirs],
        "routing": {"selectedTotal": 5, "lastSelectedTime": "2026-03-14T13:00:00Z"},
    }
    mine = {"replica": "me", "selected": 2, "lastSelectedTime": "2026-03-14T12:00:00Z"}
    patch = merge_diff(status, backend_desired(status, mine, replica="me", now=MARCH))
    assert patch["routing"] == {"selectedTotal": 7}
    assert len(patch["replicas"]) == 2


def test_restored_totals_never_lower_or_double_what_the_cell_holds() -> None:
    cell = PolicyRuntime(now=MARCH)
    cell.add_spend(2.0, MARCH)
    cell.restore_own(period="2026-03", spent_usd=1.5, previous=None, counters=(0, 0, 0))
    assert cell.own_usd == 2.0
    cell.restore_own(period="2026-03", spent_usd=3.0, previous=None, counters=(4, 0, 0))
    cell.restore_own(period="2026-03", spent_usd=3.0, previous=None, counters=(4, 0, 0))
    assert (cell.own_usd, cell.routed) == (3.0, 4)
    cell.load_others("2026-03", 10.0)
    assert cell.spent_usd == 13.0


def test_rollover_instant_is_the_first_of_next_month_in_utc() -> None:
    assert next_reset(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )


def test_status_budget_state_agrees_with_decisions_exactly_at_the_limit() -> None:
    """Ten reports of $0.10 against $1.00 sum to 0.9999999999999999: still the hard limit."""
    spent = sum([0.1] * 10)
    budget = api.Budget(monthly_limit_usd=1.0, soft_limit_percent=90)
    assert budget_state(spent, budget) is api.BudgetState.HARD_LIMIT
    assert budget_state(sum([0.1] * 9), budget) is api.BudgetState.SOFT_LIMIT


# LIMIT: near-limit threshold at 90 % of the $75 soft limit = $67.50.
@pytest.mark.parametrize(
    ("spent", "unpersisted", "closing"),
    [
        (20.0, 4.75, True),  # a tenth of the $47.50 headroom
        (20.0, 4.5, False),
        (60.0, 0.75, True),  # the headroom shrinks, and with it what a replica may hold back
        (60.0, 0.5, False),
        (20.0, 0.0, False),  # nothing to write
    ],
)
def test_unpersisted_spend_is_flushed_early_once_it_is_a_tenth_of_the_headroom(
    spent: float, unpersisted: float, closing: bool
) -> None:
    assert closing_in(spent, unpersisted_usd=unpersisted, budget=LIMIT) is closing


def test_policy_without_a_limit_is_never_closing_in() -> None:
    assert not closing_in(1e6, unpersisted_usd=1e6, budget=None)
    assert not closing_in(1e6, unpersisted_usd=1e6, budget=api.Budget())
