"""How nexusctl shows each response as a table (json and yaml are the messages themselves)."""

from __future__ import annotations

from collections.abc import Sequence

from ..serving.proto import router_pb2 as pb
from .tables import render_table

_OUTCOMES = {
    pb.OUTCOME_ROUTED: "ROUTED",
    pb.OUTCOME_QUEUED: "QUEUED",
    pb.OUTCOME_REJECTED: "REJECTED",
}
_BUDGETS = {
    pb.BUDGET_STATE_NORMAL: "Normal",
    pb.BUDGET_STATE_SOFT_LIMIT: "SoftLimit",
    pb.BUDGET_STATE_HARD_LIMIT: "HardLimit",
}


def decision_view(response: pb.RouteResponse) -> str:
    """Outcome, backend and reason on one line each; rejections as a table."""
    lines = [f"OUTCOME:   {_OUTCOMES.get(response.outcome, 'UNKNOWN')}"]
    if response.HasField("backend"):
        backend = response.backend
        lines.append(
            f"BACKEND:   {backend.namespace}/{backend.name} ({backend.type}, {backend.zone}, tier {backend.tier}) {backend.url}"
        )
    lines.append(f"MODEL:     {response.model}")
    lines.append(f"REASON:    {response.reason}")
    lines.append(f"POLICY:    {response.policy or '-'}")
    lines.append(f"COST:      ${response.cost_estimate:.6f}")
    if response.budget_state in _BUDGETS:
        lines.append(f"BUDGET:    {_BUDGETS[response.budget_state]}")
    if response.fallback_used:
        lines.append("FALLBACK:  yes")
    if response.HasField("retry_after_ms"):
        lines.append(f"RETRY IN:  {response.retry_after_ms} ms")
    if response.available_models:
        lines.append(f"AVAILABLE: {', '.join(response.available_models)}")
    if response.rejections:
        lines += ["", rejections_table(response.rejections)]
    return "\n".join(lines)


def explanation_view(explanation: pb.Explanation) -> str:
    """The decision, then one row per reconciler step, then every exclusion."""
    trace = render_table(
        ["RECONCILER", "BEFORE", "AFTER", "TIME (µs)", "MESSAGE"],
        [
            [t.reconciler, t.candidates_before, t.candidates_after, t.elapsed_us, t.message]
            for t in explanation.trace
        ],
    )
    parts = [decision_view(explanation.decision), "", trace]
    if explanation.exclusions:
        parts += ["", rejections_table(explanation.exclusions)]
    return "\n".join(parts)


def rejections_table(rejections: Sequence[pb.Rejection]) -> str:
    return render_table(
        ["BACKEND", "MODEL", "RECONCILER", "CODE", "REASON", "SUGGESTED ACTION"],
        [
            [r.backend, r.model, r.reconciler, r.reason_code, r.reason, r.suggested_action]
            for r in rejections
        ],
    )


def inventory_view(inventory: pb.Inventory, *, kinds: tuple[str, ...]) -> str:
    parts = []
    if "backends" in kinds:
        parts.append(_backends_table(inventory.backends))
    if "policies" in kinds:
        parts.append(_policies_table(inventory.policies))
    return "\n\n".join(parts)


def _backends_table(backends: Sequence[pb.BackendInfo]) -> str:
    rows = []
    for b in backends:
        excluded_by = ", ".join(f"{e.policy}:{e.reason_code}" for e in b.exclusions)
        latency = b.latency_ms if b.HasField("latency_ms") else None
        health = f"{b.health} (draining)" if b.draining else b.health
        rows.append(
            [
                b.ref.namespace,
                b.ref.name,
                b.ref.type,
                b.ref.zone,
                b.ref.tier,
                health,
                latency,
                b.in_flight,
                len(b.models),
                excluded_by,
            ]
        )
    return render_table(
        [
            "NAMESPACE",
            "BACKEND",
            "TYPE",
            "ZONE",
            "TIER",
            "HEALTH",
            "LATENCY (ms)",
            "IN-FLIGHT",
            "MODELS",
            "EXCLUDED BY",
        ],
        rows,
    )


def _policies_table(policies: Sequence[pb.PolicyInfo]) -> str:
    rows = []
    for p in policies:
        eligible = f"{len(p.eligible_backends)}/{p.matched_backends}"
        budget = _budget_cell(p)
        rows.append(
            [
                p.namespace,
                p.name,
                ",".join(p.model_patterns),
                p.privacy,
                p.strategy,
                eligible,
                budget,
                p.shadowed_by,
                _problems_cell(p),
            ]
        )
    return render_table(
        [
            "NAMESPACE",
            "POLICY",
            "PATTERNS",
            "PRIVACY",
            "STRATEGY",
            "ELIGIBLE",
            "BUDGET",
            "SHADOWED BY",
            "PROBLEM",
        ],
        rows,
    )


def _problems_cell(policy: pb.PolicyInfo) -> str:
    """The condition reason and the missing plug-ins; details are in -o yaml."""
    parts = [policy.problem.split(":", 1)[0]] if policy.problem else []
    parts += [
        f"plugin {item.split(':', 1)[0]} unavailable" for item in policy.unavailable_reconcilers
    ]
    return "; ".join(parts)


def _budget_cell(policy: pb.PolicyInfo) -> str:
    if not policy.HasField("limit_usd"):
        return "-"
    return f"${policy.spent_usd:.2f}/${policy.limit_usd:.2f} {_BUDGETS.get(policy.budget_state, '')}".rstrip()
