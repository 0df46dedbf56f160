"""What a pipeline run decides: Route, Queue or Reject, with the structured reasons."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .views import Candidate


@dataclass(frozen=True, slots=True)
class Exclusion:
    """Why one backend (or, with an empty `backend`, the whole request) was turned down."""

    backend: str
    reconciler: str
    reason_code: str
    reason: str
    suggested_action: str = ""
    model: str = ""
    required_tier: int | None = None
    privacy_zone_required: str | None = None


class TraceEntry(NamedTuple):
    """One reconciler's run: how many candidates it saw and left, and how long it took.

    A NamedTuple rather than a dataclass: one is built per stage per request, and tuple
    construction is the cheapest immutable record Python has."""

    reconciler: str
    candidates_before: int
    candidates_after: int
    elapsed_us: float
    message: str = ""
    outcome: str = "ok"

    def render(self) -> str:
        mark = {"ok": "✓", "failed": "✗", "skipped": "⚠"}.get(self.outcome, "?")
        text = (
            f"{mark} {self.reconciler}: {self.candidates_before}→{self.candidates_after} candidates"
        )
        return f"{text} ({self.message})" if self.message else text


@dataclass(frozen=True, slots=True)
class RouteDecision:
    candidate: Candidate
    reason: str
    cost_estimate: float


@dataclass(frozen=True, slots=True)
class QueueDecision:
    """Every remaining backend is only at capacity: the caller should retry shortly."""

    reason: str
    estimated_wait_ms: int
    retry_after_ms: int


@dataclass(frozen=True, slots=True)
class RejectDecision:
    reason_code: str
    reason: str
    reasons: tuple[Exclusion, ...]


RoutingDecision = RouteDecision | QueueDecision | RejectDecision
