"""One pipeline attempt (the primary model or one fallback) and the rules that chain them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from time import perf_counter_ns

from nexus_operator.api import Privacy
from nexus_operator.pipeline import (
    Exclusion,
    ReconcilerPipeline,
    RejectDecision,
    RequestRequirements,
    RoutingDecision,
    RoutingIntent,
    TraceEntry,
    reasons,
    stages,
)

from .policies import CompiledPolicy


@dataclass(slots=True)
class Attempt:
    """`early` is set when the attempt was decided before any reconciler ran (alias errors,
    unknown model); otherwise `intent` carries the pipeline's result."""

    requested: str
    model: str
    policy: CompiledPolicy | None
    intent: RoutingIntent | None = None
    pipeline: ReconcilerPipeline | None = None
    early: RejectDecision | None = None
    available_models: list[str] = field(default_factory=list)
    early_trace: list[TraceEntry] = field(default_factory=list)

    @property
    def result(self) -> RoutingDecision | None:
        if self.early is not None:
            return self.early
        return self.intent.decision if self.intent is not None else None

    @property
    def trace(self) -> list[TraceEntry]:
        return self.intent.annotations.trace_entries if self.intent else self.early_trace

    @property
    def exclusions(self) -> list[Exclusion]:
        return self.intent.annotations.exclusions if self.intent else []

    @property
    def policy_name(self) -> str | None:
        return self.policy.name if self.policy is not None else None


def early_reject(
    *, requested: str, code: str, reason: str, suggested_action: str, started: int
) -> tuple[RejectDecision, list[TraceEntry]]:
    """A request-level rejection recorded as the RequestAnalyzer's, with its trace entry."""
    failure = Exclusion(
        backend="",
        reconciler=stages.REQUEST_ANALYZER,
        reason_code=code,
        reason=reason,
        suggested_action=suggested_action,
        model=requested,
    )
    elapsed = (perf_counter_ns() - started) / 1000
    entry = TraceEntry(stages.REQUEST_ANALYZER, 0, 0, elapsed, reason, "failed")
    return RejectDecision(code, reason, (failure,)), [entry]


def fallback_requests(primary: Attempt, req: RequestRequirements) -> list[RequestRequirements]:
    """Fallback requests for a rejected primary, carrying its privacy, tier and capabilities
    so a fallback never loosens what the primary required. Empty when fallbacks do not apply."""
    result, policy = primary.result, primary.policy
    if not isinstance(result, RejectDecision) or result.reason_code in reasons.TERMINAL:
        return []
    if req.strict or policy is None or not policy.spec.fallback_allowed:
        return []
    spec = policy.spec
    caps = spec.required_capabilities
    restricted = spec.privacy is Privacy.RESTRICTED or req.privacy is Privacy.RESTRICTED
    carried = replace(
        req,
        privacy=Privacy.RESTRICTED if restricted else req.privacy,
        min_tier=max(spec.min_tier, req.min_tier or 1),
        needs_vision=req.needs_vision or caps.vision,
        needs_tools=req.needs_tools or caps.tools,
        needs_json_mode=req.needs_json_mode or caps.json_mode,
        min_context_length=max(req.min_context_length, caps.min_context_length),
    )
    return [replace(carried, model=model) for model in spec.fallbacks]
