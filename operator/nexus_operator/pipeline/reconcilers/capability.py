"""CapabilityReconciler: tier and capabilities, from the policy and the request together.

The tier floor is max(policy minTier, request minTier); there is no downgrade mode. One
exclusion lists everything a backend lacks, so a user fixes it in one go.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

from nexus_operator.api import RequiredCapabilities

from .. import reasons, stages
from ..intent import RoutingIntent
from ..plan import CapabilityBounds
from ..requirements import RequestRequirements
from ..runner import ReconcileErrorPolicy
from ..verdict import Exclusion
from ..views import Candidate, ModelView


class Needs(NamedTuple):
    """The combined requirement one candidate is checked against."""

    tier: int = 1
    vision: bool = False
    tools: bool = False
    json_mode: bool = False
    min_context_length: int = 0
    context_tokens: int = 0
    max_output_tokens: int | None = None


class CapabilityReconciler:
    name: ClassVar[str] = stages.CAPABILITY
    error_policy: ClassVar[ReconcileErrorPolicy] = ReconcileErrorPolicy.FAIL_CLOSED
    trusted: ClassVar[bool] = True

    def __init__(self, *, min_tier: int = 1, required: RequiredCapabilities | None = None) -> None:
        required = required or RequiredCapabilities()
        self.policy_needs = Needs(
            tier=min_tier,
            vision=required.vision,
            tools=required.tools,
            json_mode=required.json_mode,
            min_context_length=required.min_context_length,
        )

    def static_exclusion(self, candidate: Candidate) -> Exclusion | None:
        return check(candidate, self.policy_needs, model=candidate.model.id)

    def reconcile(self, intent: RoutingIntent) -> None:
        plan = intent.plan
        req = intent.request_requirements
        if plan is not None and _only_tokens_beyond(
            self.policy_needs, req, bounds=plan.capabilities
        ):
            intent.apply_static(self)
            return
        needs = combine(self.policy_needs, req)
        if plan is not None and not adds_constraint(
            needs, self.policy_needs, bounds=plan.capabilities
        ):
            intent.apply_static(self)
            return
        model = intent.model
        found = (check(c, needs, model=model) for c in intent.candidate_backends)
        excluded = intent.exclude_many(e for e in found if e is not None)
        if excluded:
            intent.trace(f"{excluded} backend(s) lack tier or capabilities")


def combine(policy: Needs, req: RequestRequirements) -> Needs:
    """The union of the policy's requirements and the request's needs."""
    return Needs(
        tier=max(policy.tier, req.min_tier or 1),
        vision=policy.vision or req.needs_vision,
        tools=policy.tools or req.needs_tools,
        json_mode=policy.json_mode or req.needs_json_mode,
        min_context_length=max(policy.min_context_length, req.min_context_length),
        context_tokens=req.estimated_tokens + (req.max_output_tokens or 0),
        max_output_tokens=req.max_output_tokens,
    )


def _only_tokens_beyond(
    policy: Needs, req: RequestRequirements, *, bounds: CapabilityBounds
) -> bool:
    """The common request: it needs nothing the policy does not, and its tokens fit every plan
    candidate; then `adds_constraint` is False without building the combined Needs (the same
    checks, for a request that adds no tier, capability or context floor of its own)."""
    max_output = req.max_output_tokens
    return (
        not (req.needs_vision or req.needs_tools or req.needs_json_mode)
        and (req.min_tier or 1) <= policy.tier
        and req.min_context_length <= policy.min_context_length
        and req.estimated_tokens + (max_output or 0) <= bounds.min_context_length
        and (
            max_output is None
            or bounds.min_max_output_tokens is None
            or max_output <= bounds.min_max_output_tokens
        )
    )


def adds_constraint(needs: Needs, policy: Needs, *, bounds: CapabilityBounds) -> bool:
    """Whether the request could exclude (or re-word the exclusion of) any plan candidate
    beyond what the policy alone does; when not, the precomputed exclusions are exact."""
    return (
        (needs.tier > policy.tier and needs.tier > bounds.min_tier)
        or (needs.vision and not policy.vision and not bounds.all_vision)
        or (needs.tools and not policy.tools and not bounds.all_tools)
        or (needs.json_mode and not policy.json_mode and not bounds.all_json_mode)
        or (
            needs.min_context_length > policy.min_context_length
            and needs.min_context_length > bounds.min_context_length
        )
        or needs.context_tokens > bounds.min_context_length
        or (
            needs.max_output_tokens is not None
            and bounds.min_max_output_tokens is not None
            and needs.max_output_tokens > bounds.min_max_output_tokens
        )
    )


def check(candidate: Candidate, needs: Needs, *, model: str) -> Exclusion | None:
    """The one exclusion (or None) for a candidate under `needs`."""
    backend, offered = candidate.backend, candidate.model
    missing = _missing(offered, needs)
    context_exceeded = needs.context_tokens > offered.context_length
    if backend.tier < needs.tier:
        code = reasons.TIER_TOO_LOW
        parts = [f"tier {backend.tier} is below the required {needs.tier}", *missing]
    elif missing:
        code = reasons.MISSING_CAPABILITIES
        parts = missing
    elif context_exceeded:
        code = reasons.CONTEXT_TOO_LONG
        parts = []
    else:
        return None
    if context_exceeded:
        parts.append(
            f"{needs.context_tokens} tokens exceed the context length {offered.context_length}"
        )
    return Exclusion(
        backend=backend.name,
        reconciler=stages.CAPABILITY,
        reason_code=code,
        reason="; ".join(parts),
        suggested_action=_suggestion(code),
        model=model,
        required_tier=needs.tier if code == reasons.TIER_TOO_LOW else None,
    )


def _missing(m: ModelView, needs: Needs) -> list[str]:
    missing = [
        label
        for label, needed, has in (
            ("vision", needs.vision, m.supports_vision),
            ("tools", needs.tools, m.supports_tools),
            ("jsonMode", needs.json_mode, m.supports_json_mode),
        )
        if needed and not has
    ]
    if m.context_length < needs.min_context_length:
        missing.append(
            f"contextLength {m.context_length} < minContextLength {needs.min_context_length}"
        )
    if (
        needs.max_output_tokens is not None
        and m.max_output_tokens is not None
        and needs.max_output_tokens > m.max_output_tokens
    ):
        missing.append(
            f"maxOutputTokens {needs.max_output_tokens} > model limit {m.max_output_tokens}"
        )
    return missing


def _suggestion(code: str) -> str:
    if code == reasons.TIER_TOO_LOW:
        return "route to a higher-tier backend or lower minTier"
    if code == reasons.CONTEXT_TOO_LONG:
        return "send fewer tokens or use a model with a longer context"
    return "use a backend whose model offers the missing capabilities"
