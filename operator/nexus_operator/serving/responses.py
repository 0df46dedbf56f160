"""Turn routing decisions into gRPC responses (the inverse of requests.py)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..api import BudgetState
from ..routing import BackendRef, Decision, Exclusion, Outcome, TraceEntry
from ..routing.identity_cache import IdentityCache
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
    backend = decision.backend
    # Parsing the backend's cached wire bytes into the new message is cheaper than building
    # an empty one and merging the backend into it.
    response = (
        pb.RouteResponse.FromString(_backend_bytes(backend))
        if backend is not None
        else pb.RouteResponse()
    )
    shared = decision.shared_exclusions
    own: Sequence[Exclusion] = decision.rejections
    if shared and _starts_with(own, shared):
        response.MergeFromString(_SHARED.encoded(shared, field=_REJECTIONS))
        own = own[len(shared) :]
    _fill_route_response(response, decision, rejected=own)
    return response


def _fill_route_response(
    response: pb.RouteResponse, decision: Decision, *, rejected: Sequence[Exclusion]
) -> None:
    """Set the decision's fields on `response`, leaving out the ones at their default. Every
    field but the two `optional` ones is a proto3 scalar without presence, so an unset field
    and one set to its default encode the same bytes; setting only what a decision has is
    the cheaper of the two (one Route call builds one response)."""
    response.outcome = _OUTCOMES[decision.outcome]
    response.model = decision.model
    response.reason = decision.reason
    response.cost_estimate = decision.cost_estimate
    if decision.budget_state is not None:
        response.budget_state = BUDGET_STATES[decision.budget_state]
    if decision.fallback_used:
        response.fallback_used = True
    if rejected:
        response.rejections.extend(rejections(rejected))
    if decision.available_models:
        response.available_models.extend(decision.available_models)
    if decision.policy:
        response.policy = decision.policy
    if decision.request_id:
        response.request_id = decision.request_id
    if decision.retry_after_ms is not None:
        response.retry_after_ms = decision.retry_after_ms
    if decision.estimated_wait_ms is not None:
        response.estimated_wait_ms = decision.estimated_wait_ms


def _encode_backend(backend: BackendRef) -> bytes:
    ref = pb.BackendRef(
        name=backend.name,
        namespace=backend.namespace,
        url=backend.url,
        type=str(backend.type),
        zone=str(backend.zone),
        tier=backend.tier,
    )
    return pb.RouteResponse(backend=ref).SerializeToString()


_backend_bytes = IdentityCache(_encode_backend)
"""A RouteResponse holding only a decision's backend, as encoded bytes, once per BackendRef
(the engine keeps one per view)."""


def explanation(decision: Decision) -> pb.Explanation:
    """The Explanation for a decision: the decision itself, its trace and every exclusion. The
    plan's shared block is rendered once per plan and copied in as bytes."""
    result = pb.Explanation()
    shared = decision.shared_exclusions
    own: Sequence[Exclusion] = decision.exclusions
    if shared and _starts_with(own, shared):
        result.MergeFromString(_SHARED.encoded(shared, field=_EXCLUSIONS))
        own = own[len(shared) :]
    result.MergeFrom(
        pb.Explanation(
            decision=route_response(decision),
            trace=[_trace_entry(entry) for entry in decision.trace],
            exclusions=rejections(own),
        )
    )
    return result


_REJECTIONS = "RouteResponse.rejections"
_EXCLUSIONS = "Explanation.exclusions"


def _starts_with(items: Sequence[Exclusion], block: tuple[Exclusion, ...]) -> bool:
    """Whether `items` begins with the plan block (checked at its ends: a decision's list
    starts with the block whole or not at all)."""
    n = len(block)
    return len(items) >= n and items[0] is block[0] and items[n - 1] is block[-1]


class _SharedBlocks:
    """Wire bytes of plan blocks as a RouteResponse's rejections or an Explanation's
    exclusions, so a block is rendered once per plan rather than once per decision. Keyed by
    the block's identity; holding the block keeps that identity from being reused. Bounded:
    the oldest entries go first (plans are dropped when their snapshot changes)."""

    LIMIT = 256

    def __init__(self) -> None:
        self._bytes: dict[tuple[int, str], tuple[tuple[Exclusion, ...], bytes]] = {}

    def encoded(self, block: tuple[Exclusion, ...], *, field: str) -> bytes:
        key = (id(block), field)
        found = self._bytes.get(key)
        if found is not None and found[0] is block:
            return found[1]
        if field == _REJECTIONS:
            data = pb.RouteResponse(rejections=rejections(block)).SerializeToString()
        else:
            data = pb.Explanation(exclusions=rejections(block)).SerializeToString()
        if len(self._bytes) >= self.LIMIT:
            self._bytes.pop(next(iter(self._bytes), key), None)
        self._bytes[key] = (block, data)
        return data


_SHARED = _SharedBlocks()


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
