"""Events for condition transitions a user must act on, so `kubectl describe` and `kubectl get
events` say what is wrong with a RoutingPolicy (or a Backend's spec) where they look.

Pure: the status writer passes the conditions the API server holds and the ones it is about to
write, and posts what this returns once the write succeeded. Comparing with the stored
conditions (not with memory) means an operator restart posts nothing new for a problem the
status already shows, and a conflict retry never posts twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nexus_operator.api import ConditionStatus
from nexus_operator.api import conditions as c

from . import events

TRUE, FALSE = ConditionStatus.TRUE.value, ConditionStatus.FALSE.value


@dataclass(frozen=True)
class ConditionEvent:
    type_: str  # Normal or Warning
    reason: str  # the condition's reason, e.g. AliasCycle, SelectorMatchesNothing
    message: str


# (condition type, status) worth an Event, per kind. Backend health and budgets have their
# own Events (BackendUnhealthy, BudgetSoftLimitReached, ...); Ready=False for a Backend is
# announced only for a rejected spec (the other reasons are health and draining).
_POLICY_PROBLEMS = {
    (c.READY, FALSE),
    (c.SHADOWED, TRUE),
    (c.NO_ELIGIBLE_BACKENDS, TRUE),
    (c.RECONCILERS_READY, FALSE),
}
_BACKEND_PROBLEM_REASONS = {c.INVALID_SPEC}


def condition_events(
    kind: str, *, stored: Iterable[Mapping[str, Any]], desired: Iterable[Mapping[str, Any]]
) -> list[ConditionEvent]:
    """A Warning for each problem condition that is new or changed its reason, and a Normal
    event when Ready returns to True from False; one per reason (a policy whose selector
    matches nothing is both not Ready and without eligible backends, for the same reason)."""
    before = {str(item.get("type")): item for item in stored}
    found: list[ConditionEvent] = []
    for item in desired:
        type_, status, reason = str(item["type"]), str(item["status"]), str(item["reason"])
        message = str(item.get("message") or "")
        old = before.get(type_)
        changed = old is None or (old.get("status"), old.get("reason")) != (status, reason)
        if not changed or any(event.reason == reason for event in found):
            continue
        if _is_problem(kind, type_=type_, status=status, reason=reason):
            found.append(ConditionEvent(events.WARNING, reason, message))
        elif type_ == c.READY and status == TRUE and old is not None and old.get("status") == FALSE:
            found.append(ConditionEvent(events.NORMAL, reason, message))
    return found


def _is_problem(kind: str, *, type_: str, status: str, reason: str) -> bool:
    if kind == "RoutingPolicy":
        return (type_, status) in _POLICY_PROBLEMS
    return type_ == c.READY and status == FALSE and reason in _BACKEND_PROBLEM_REASONS


def post(
    recorder: events.EventRecorder | None,
    ref: events.ObjectRef,
    *,
    found: Sequence[ConditionEvent],
) -> None:
    if recorder is None:
        return
    for event in found:
        recorder.emit(ref, type_=event.type_, reason=event.reason, message=event.message)
