"""Turn routing decisions into gRPC responses (the inverse of requests.py)."""

from __future__ import annotations

from collections.abc import Iterable

from ..api import BudgetState
from ..routing import Decision, Exclusion, Outcome, TraceEntry
from .proto import router_pb2 as pb

_OUTCOMES = {
    Outcome.ROUTED: pb.OUTCOME_ROUTED,
    Outcome.QUEUED: pb.OUTCOME_QUEUED,
    Outcome.REJECTED: pb.OUTCOME_REJECTED,
}
BUDGET_STATES = {
    None: pb.BUDGET_STATE_UNSPECIFIED,
    BudgetState.NORMAL: pb.BUDGET_STATE_NORMAL,
    BudgetState.SOFT_LIMIT: pb.BUDGET_STATE_SOFT_LIMIT,
    BudgetState.HARD_LIMIT: pb.BUDGET_STATE_HARD_LIMIT,
}


def route_response(decision: Decision) -> pb.RouteResponse:
    """The RouteResponse for a decision; optional fields are set only when the decision has them."""
    response = pb.RouteResponse(
        outcome=_OUTCOMES[decision.outcome],
        model=decision.model,
        reason=decision.reason,
        cost_estimate=decision.cost_estimate,
        budget_state=BUDGET_STATES[decision.budget_state],
        fallback_used=decision.fallback_used,
        rejections=rejections(decision.rejections),
        available_models=decision.available_models,
        policy=decision.policy or "",
        request_id=decision.request_id or "",
    )
    if decision.backend is not None:
        backend = decision.backend
        response.backend.name = backend.name
        response.backend.namespace = backend.namespace
        response.backend.url = backend.url
        response.backend.type = str(backend.type)
        response.backend.zone = str(backend.zone)
        response.backend.tier = backend.tier
    if decision.retry_after_ms is not None:
        response.retry_after_ms = decision.retry_after_ms
    if decision.estimated_wait_ms is not None:
        response.estimated_wait_ms = decision.estimated_wait_ms
    return response


def explanation(decision: Decision) -> pb.Explanation:
    """The Explanation for a decision: the decision itself, its trace and every exclusion."""
    return pb.Explanation(
        decision=route_response(decision),
        trace=[_trace_entry(entry) for entry in decision.trace],
        exclusions=rejections(decision.exclusions),
    )


def rejections(exclusions: Iterable[Exclusion]) -> list[pb.Rejection]:
    """Structured rejection reasons, with the tier or zone the request needed when known."""
    return [_rejection(exclusion) for exclusion in exclusions]


def _rejection(exclusion: Exclusion) -> pb.Rejection:
    rejection = pb.Rejection(
        reconciler=exclusion.reconciler,
        backend=exclusion.backend or "",
        model=exclusion.model or "",
        reason_code=exclusion.reason_code,
        reason=exclusion.reason,
        suggested_action=exclusion.suggested_action or "",
    )
    if exclusion.required_tier is not None:
        rejection.required_tier = exclusion.required_tier
    if exclusion.privacy_zone_required is not None:
        rejection.privacy_zone_required = str(exclusion.privacy_zone_required)
    return rejection


def _trace_entry(entry: TraceEntry) -> pb.TraceEntry:
    return pb.TraceEntry(
        reconciler=entry.reconciler,
        candidates_before=entry.candidates_before,
        candidates_after=entry.candidates_after,
        elapsed_us=int(entry.elapsed_us),
        message=entry.message,
    )
