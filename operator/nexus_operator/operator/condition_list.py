"""Condition list upkeep, mirroring Go's meta.SetStatusCondition.

Invariants: conditions are keyed by type (one entry each, order of first appearance kept);
lastTransitionTime moves only when the status flips, so re-asserting a condition every flush
never looks like a transition to `kubectl describe` or to clients watching it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nexus_operator.api import Condition, ConditionStatus


@dataclass(frozen=True)
class DesiredCondition:
    """What the operator currently believes, before transition-time bookkeeping."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""


def set_status_condition(
    existing: Sequence[Condition],
    desired: DesiredCondition,
    *,
    observed_generation: int | None,
    now: str,
) -> list[Condition]:
    """Upsert `desired` into a copy of `existing`, keeping the transition time when status holds."""
    result: list[Condition] = []
    replaced = False
    for condition in existing:
        if condition.type != desired.type:
            result.append(condition)
            continue
        held = condition.status == desired.status
        transition = condition.last_transition_time if held else now
        result.append(
            _build(desired, observed_generation=observed_generation, transition=transition)
        )
        replaced = True
    if not replaced:
        result.append(_build(desired, observed_generation=observed_generation, transition=now))
    return result


def set_status_conditions(
    existing: Sequence[Condition],
    desired: Sequence[DesiredCondition],
    *,
    observed_generation: int | None,
    now: str,
) -> list[Condition]:
    conditions = list(existing)
    for item in desired:
        conditions = set_status_condition(
            conditions, item, observed_generation=observed_generation, now=now
        )
    return conditions


def _build(
    desired: DesiredCondition, *, observed_generation: int | None, transition: str
) -> Condition:
    return Condition(
        type=desired.type,
        status=desired.status,
        reason=desired.reason,
        message=desired.message,
        last_transition_time=transition,
        observed_generation=observed_generation,
    )
