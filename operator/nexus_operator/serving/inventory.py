"""GetInventory: the backends and policies one server routes over, with runtime facts.

Read-only and off the hot path: it walks the current snapshot and asks the engine for the
static evaluation it already exposes for status write-back.
"""

from __future__ import annotations

from ..api import Backend, RoutingPolicy, redact_url
from ..routing import RoutingEngine, StaticExclusion
from .proto import router_pb2 as pb
from .responses import BUDGET_STATES


def inventory(engine: RoutingEngine, *, namespace: str | None) -> pb.Inventory:
    snapshot = engine.registry.snapshot
    backends = sorted(snapshot.backends.values(), key=_key)
    policies = sorted(snapshot.policies.values(), key=_key)
    return pb.Inventory(
        backends=[
            _backend_info(engine, b) for b in backends if namespace in (None, b.metadata.namespace)
        ],
        policies=[
            _policy_info(engine, p) for p in policies if namespace in (None, p.metadata.namespace)
        ],
    )


def _key(obj: Backend | RoutingPolicy) -> tuple[str, str]:
    return obj.metadata.namespace, obj.metadata.name


def _backend_info(engine: RoutingEngine, backend: Backend) -> pb.BackendInfo:
    meta, spec = backend.metadata, backend.spec
    cell = engine.registry.runtime.backend(meta.namespace, meta.name)
    info = pb.BackendInfo(
        ref=pb.BackendRef(
            name=meta.name,
            namespace=meta.namespace,
            url=redact_url(spec.url),
            type=spec.type.value,
            zone=spec.effective_zone.value,
            tier=spec.tier,
        ),
        health=cell.health_state.value,
        in_flight=cell.in_flight,
        selected_total=cell.selected_total,
        models=[m.id for m in spec.models],
        draining=spec.draining,
        priority=spec.priority,
        exclusions=_static(engine.backend_exclusions(meta.namespace, meta.name)),
        last_error=cell.last_error or "",
    )
    if cell.latency_ms is not None:
        info.latency_ms = cell.latency_ms
    return info


def _policy_info(engine: RoutingEngine, policy: RoutingPolicy) -> pb.PolicyInfo:
    meta, spec = policy.metadata, policy.spec
    report = engine.policy_report(meta.namespace, meta.name)
    spent = engine.registry.runtime.policy(meta.namespace, meta.name).spent_usd
    state = spec.budget.state(spent) if spec.budget is not None else None
    info = pb.PolicyInfo(
        name=meta.name,
        namespace=meta.namespace,
        model_patterns=spec.model_patterns,
        privacy=spec.privacy.value,
        strategy=spec.selection.strategy.value,
        matched_backends=len(report.matched_backends),
        eligible_backends=report.eligible_backends,
        spent_usd=spent,
        budget_state=BUDGET_STATES[state],
        shadowed_by=report.shadowed_by or "",
        exclusions=_static(report.exclusions),
        problem=_problem(report.never_routes or report.no_backends),
        unavailable_reconcilers=[
            f"{name}: {problem}"
            for name, problem in engine.plugin_problems(meta.namespace, meta.name)
        ],
    )
    if spec.budget is not None and spec.budget.monthly_limit_usd is not None:
        info.limit_usd = spec.budget.monthly_limit_usd
    return info


def _problem(found: tuple[str, str] | None) -> str:
    return "" if found is None else f"{found[0]}: {found[1]}"


def _static(exclusions: list[StaticExclusion]) -> list[pb.StaticExclusion]:
    return [
        pb.StaticExclusion(
            backend=e.backend,
            policy=e.policy,
            reconciler=e.reconciler,
            reason_code=e.reason_code,
            reason=e.reason,
            suggested_action=e.suggested_action,
        )
        for e in exclusions
    ]
