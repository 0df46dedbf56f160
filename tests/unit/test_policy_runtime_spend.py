"""PolicyRuntime spend: one bad amount must not poison the month's total for good."""

from __future__ import annotations

import math

import pytest
from routing_factories import NOW

from nexus_operator.pipeline import PolicyRuntime


@pytest.mark.parametrize("amount", [math.inf, -math.inf, math.nan])
def test_a_non_finite_amount_leaves_the_spend_unchanged(amount: float) -> None:
    spend = PolicyRuntime()
    spend.add_spend(0.25, NOW)
    spend.add_spend(amount, NOW)
    assert (spend.spent_usd, spend.own_usd) == (0.25, 0.25)
