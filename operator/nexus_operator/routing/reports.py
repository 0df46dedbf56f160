"""Static evaluation for status: which backends a policy excludes whatever the request.

A backend is *matched* by a policy when it is in the policy's scope and lists at least one model
the patterns match; it is *eligible* when one such model passes lifecycle, privacy, tier,
capabilities, credentials and health. Otherwise the exclusion of its first matching model is reported.

A backend in scope that lists none of the policy's models is still checked on what holds for
the backend whatever the model — draining, zone, tier, health — so a restricted policy's status
names every Open-zone backend in its scope and says why it can never serve it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nexus_operator.api import HardLimitAction, HealthState, RequiredCapabilities
from nexus_operator.api import conditions as c
from nexus_operator.pipeline import (
    BackendView,
    Candidate,
    CapabilityReconciler,
    Exclusion,
    LifecycleReconciler,
    PrivacyReconciler,
    RuntimeState,
)
from nexus_operator.pipeline.reconcilers.health import credentials_exclusion, health_exclusion

from .compiled_patterns import Glob
from .policies import CompiledPolicy
from .snapshot import NamespaceSnapshot


@dataclass(frozen=True, slots=True)
class StaticExclusion:
    backend: str
    policy: str
    reconciler: str
    reason_code: str
    reason: str
    suggested_action: str


@dataclass(slots=True)
class PolicyReport:
    matched_backends: list[str] = field(default_factory=list)
    eligible_backends: list[str] = field(default_factory=list)
    exclusions: list[StaticExclusion] = field(default_factory=list)
    shadowed_by: str | None = None
    alias_error: tuple[str, str] | None = None
    # (condition reason, message) when the policy can never route whatever the backends do.
    never_routes: tuple[str, str] | None = None
    # (condition reason, message) when no in-scope backend lists a matching model.
    no_backends: tuple[str, str] | None = None


def policy_report(ns: NamespaceSnapshot, name: str, *, runtime: RuntimeState) -> PolicyReport:
    policy = ns.policy(name)
    if policy is None:
        return PolicyReport()
    report = PolicyReport(
        shadowed_by=shadowed_by(ns, policy),
        alias_error=alias_error(ns, policy),
        never_routes=never_routes(ns, policy),
    )
    for backend in sorted(ns.in_scope(policy), key=lambda b: b.name):
        models = sorted(m for m in backend.models if policy.match_prefix(m) is not None)
        if not models:
            _report_backend_level(
                report, policy, backend=backend, runtime=runtime, namespace=ns.namespace
            )
            continue
        report.matched_backends.append(backend.name)
        candidates = [
            Candidate(backend, backend.models[m], runtime.backend(ns.namespace, backend.name))
            for m in models
        ]
        found = [_static(policy, c) for c in candidates]
        if any(e is None for e in found):
            report.eligible_backends.append(backend.name)
            continue
        first = found[0]
        assert first is not None
        report.exclusions.append(_static_exclusion(policy, first))
    if not report.matched_backends:
        report.no_backends = report.never_routes or _no_backend_offers(ns, policy)
    return report


def never_routes(ns: NamespaceSnapshot, policy: CompiledPolicy) -> tuple[str, str] | None:
    """Why the policy can never route a request, whatever Backends do; None when it can.

    A policy wins the models its patterns match whether or not any backend is in its scope
    (SPEC §3), so a selector matching nothing rejects those models namespace-wide: that is said
    here, loudly, rather than routed around.
    """
    spec = policy.spec
    if not spec.model_patterns and not spec.aliases:
        return (
            c.NO_MODEL_PATTERNS,
            "spec.modelPatterns is empty: the policy matches no model and never routes.",
        )
    if spec.model_patterns and spec.backend_selector is not None and not ns.in_scope(policy):
        patterns = ", ".join(spec.model_patterns)
        return (
            c.SELECTOR_MATCHES_NOTHING,
            f"spec.backendSelector matches no Backend in namespace {ns.namespace!r}: requests "
            f"for models matching {patterns} are rejected, because this policy still wins them.",
        )
    budget = spec.budget
    if (
        budget is not None
        and budget.monthly_limit_usd == 0
        and budget.hard_limit_action is HardLimitAction.BLOCK_ALL
    ):
        return (
            c.BUDGET_BLOCKS_ALL,
            "spec.budget.monthlyLimitUsd is 0 with hardLimitAction blockAll: every request is "
            "rejected.",
        )
    return None


def _no_backend_offers(ns: NamespaceSnapshot, policy: CompiledPolicy) -> tuple[str, str]:
    if not policy.spec.model_patterns:
        return (
            c.NO_MODEL_PATTERNS,
            "spec.modelPatterns is empty: the policy only contributes its aliases.",
        )
    scope = "selected by spec.backendSelector" if policy.spec.backend_selector else "in scope"
    patterns = ", ".join(policy.spec.model_patterns)
    return (
        c.NO_BACKEND_OFFERS_MODELS,
        f"No Backend {scope} in namespace {ns.namespace!r} lists a model matching {patterns}.",
    )


def _report_backend_level(
    report: PolicyReport,
    policy: CompiledPolicy,
    *,
    backend: BackendView,
    runtime: RuntimeState,
    namespace: str,
) -> None:
    if not backend.models:
        return
    any_model = backend.models[min(backend.models)]
    candidate = Candidate(backend, any_model, runtime.backend(namespace, backend.name))
    exclusion = _static(policy, candidate, capabilities=RequiredCapabilities())
    if exclusion is not None:
        report.exclusions.append(_static_exclusion(policy, exclusion))


def _static_exclusion(policy: CompiledPolicy, exclusion: Exclusion) -> StaticExclusion:
    return StaticExclusion(
        exclusion.backend,
        policy.name,
        exclusion.reconciler,
        exclusion.reason_code,
        exclusion.reason,
        exclusion.suggested_action,
    )


@dataclass(slots=True)
class StaticIndex:
    """Every policy report of a namespace, and the same exclusions indexed by backend, so the
    status writer's per-backend lookups cost O(1) instead of a pass over every policy."""

    reports: dict[str, PolicyReport]
    by_backend: dict[str, list[StaticExclusion]]

    @classmethod
    def build(cls, ns: NamespaceSnapshot, *, runtime: RuntimeState) -> StaticIndex:
        reports = {p.name: policy_report(ns, p.name, runtime=runtime) for p in ns.policies}
        by_backend: dict[str, list[StaticExclusion]] = {}
        for report in reports.values():
            for exclusion in report.exclusions:
                by_backend.setdefault(exclusion.backend, []).append(exclusion)
        return cls(reports, by_backend)


def _static(
    policy: CompiledPolicy,
    candidate: Candidate,
    *,
    capabilities: RequiredCapabilities | None = None,
) -> Exclusion | None:
    """The first static exclusion; `capabilities` overrides the policy's (backend-level checks
    pass an empty set, so only the tier is checked)."""
    spec = policy.spec
    required = spec.required_capabilities if capabilities is None else capabilities
    filters = (
        LifecycleReconciler(),
        PrivacyReconciler(spec.privacy),
        CapabilityReconciler(min_tier=spec.min_tier, required=required),
    )
    for stage in filters:
        exclusion = stage.static_exclusion(candidate)
        if exclusion is not None:
            return exclusion
    if candidate.runtime.credentials_problem:
        return credentials_exclusion(candidate, candidate.model.id)
    if candidate.runtime.health_state is not HealthState.HEALTHY:
        return health_exclusion(candidate, candidate.model.id)
    return None


def shadowed_by(ns: NamespaceSnapshot, policy: CompiledPolicy) -> str | None:
    """A policy that wins for every model this one could match, if any.

    Sound but not complete: a pattern counts as covered by an identical pattern or by a
    `<literal>*` pattern whose literal prefixes it, from a policy ranked ahead of it.
    """
    if not policy.globs:
        return None
    for other in ns.policies:
        if other is not policy and all(
            _covered(policy, glob, other=other) for glob in policy.globs
        ):
            return other.name
    return None


def _covered(policy: CompiledPolicy, glob: Glob, *, other: CompiledPolicy) -> bool:
    mine = (policy.precedence, -glob.literal_prefix, policy.name)
    for candidate in other.globs:
        theirs = (other.precedence, -candidate.literal_prefix, other.name)
        if theirs < mine and _contains(candidate, glob):
            return True
    return False


def _contains(outer: Glob, inner: Glob) -> bool:
    if outer.pattern == inner.pattern:
        return True
    literal = outer.pattern[:-1]
    return (
        outer.pattern.endswith("*")
        and outer.literal_prefix == len(literal)
        and inner.literal_prefix >= len(literal)
        and inner.pattern.startswith(literal)
    )


def alias_error(ns: NamespaceSnapshot, policy: CompiledPolicy) -> tuple[str, str] | None:
    """The first broken alias chain that passes through an alias this policy defines."""
    own = {alias for alias, source in ns.alias_sources.items() if source == policy.name}
    for alias in sorted(ns.aliases):
        resolution = ns.resolve(alias)
        if resolution.error_code is not None and own.intersection(resolution.chain):
            return (resolution.error_code, resolution.message)
    return None
