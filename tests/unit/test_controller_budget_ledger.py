"""The budget ledger's pure parts: adding deltas, month rollover, budget states."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from nexus_operator import api
from nexus_operator.api import BudgetState
from nexus_operator.operator.budget_ledger import (
    PolicyDelta,
    backend_desired,
    budget_state,
    next_reset,
    policy_desired,
)
from nexus_operator.operator.diffing import merge_diff
from nexus_operator.pipeline.runtime import RoutedRecord

MARCH = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
APRIL = datetime(2026, 4, 1, 0, 0, 1, tzinfo=UTC)
LIMIT = api.Budget(monthly_limit_usd=100.0, soft_limit_percent=75)


def policy_patch(
    status: dict[str, Any], delta: PolicyDelta, *, budget: api.Budget | None, now: datetime
) -> dict[str, Any]:
    return merge_diff(status, policy_desired(status, delta, budget=budget, now=now))


def _delta(usd: float = 0.0, routed: int = 0, *, last: RoutedRecord | None = None) -> PolicyDelta:
    return PolicyDelta(usd, routed, 0, 0, last, None)


@pytest.mark.parametrize(
    ("spent", "state"),
    [(74.99, BudgetState.NORMAL), (75.0, BudgetState.SOFT_LIMIT), (100.0, BudgetState.HARD_LIMIT)],
)
def test_budget_thresholds_are_inclusive(spent: float, state: BudgetState) -> None:
    assert budget_state(spent, LIMIT) is state


def test_policy_without_a_limit_is_always_normal() -> None:
    assert budget_state(1e6, api.Budget()) is BudgetState.NORMAL


def test_delta_is_added_to_the_persisted_spend_and_counters() -> None:
    status = {
        "budget": {"period": "2026-03", "spentUsd": 10.5, "limitUsd": 100.0},
        "decisions": {"routed": 7, "rejected": 1, "queued": 0},
    }
    patch = policy_patch(status, _delta(2.25, 3), budget=LIMIT, now=MARCH)
    assert patch["budget"]["spentUsd"] == 12.75
    assert patch["budget"]["utilizationPercent"] == 12.75
    assert patch["decisions"]["routed"] == 10
    assert "rejected" not in patch["decisions"]


def test_first_write_of_a_new_month_moves_spend_to_the_previous_period() -> None:
    status = {"budget": {"period": "2026-03", "spentUsd": 80.0, "state": "SoftLimit"}}
    patch = policy_patch(status, _delta(1.0), budget=LIMIT, now=APRIL)
    assert patch["budget"]["period"] == "2026-04"
    assert patch["budget"]["spentUsd"] == 1.0
    assert patch["budget"]["previousPeriod"] == "2026-03"
    assert patch["budget"]["previousSpentUsd"] == 80.0
    assert patch["budget"]["state"] == "Normal"
    assert patch["budget"]["resetsAt"] == "2026-05-01T00:00:00Z"


def test_nothing_is_written_when_no_delta_and_the_block_is_current() -> None:
    first = policy_patch({}, _delta(), budget=LIMIT, now=MARCH)
    assert policy_patch(first, _delta(), budget=LIMIT, now=MARCH) == {}


def test_policy_without_a_limit_gets_no_budget_block() -> None:
    patch = policy_patch({"budget": {"period": "2026-03"}}, _delta(1.0, 1), budget=None, now=MARCH)
    assert patch["budget"] is None
    assert patch["decisions"]["routed"] == 1


def test_last_routed_keeps_the_newer_record_of_two_replicas() -> None:
    theirs = {"time": "2026-03-14T12:30:00Z", "model": "m", "backend": "b", "reason": "r"}
    mine = RoutedRecord(time=MARCH, model="m", backend="a", reason="only_candidate")
    patch = policy_patch(
        {"decisions": {"lastRouted": theirs}}, _delta(0, 1, last=mine), budget=None, now=MARCH
    )
    assert "lastRouted" not in patch["decisions"]


def test_selection_deltas_add_up_and_keep_the_latest_time() -> None:
    status = {"routing": {"selectedTotal": 5, "lastSelectedTime": "2026-03-14T13:00:00Z"}}
    patch = merge_diff(status, backend_desired(status, selected=2, last=MARCH))
    assert patch == {"routing": {"selectedTotal": 7}}


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
