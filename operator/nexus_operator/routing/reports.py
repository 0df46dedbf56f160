"""Static evaluation for status: which backends a policy excludes whatever the request.

A backend is *matched* by a policy when it is in the policy's scope and lists at least one model
the patterns match; it is *eligible* when one such model passes lifecycle, privacy, tier,
capabilities, credentials and health. Otherwise the exclusion of its first matching model is reported.

A backend in scope that lists none of the policy's models is still checked on what holds for
the backend whatever the model — draining, zone, tier, health — so a restricted policy's status
names every Open-zone backend in its scope and says why it can never serve it.
"""

from __future__ import annotations

from collections.abc import Iterable
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
from .snapshot import NamespaceChange, NamespaceSnapshot


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
    """One policy's report, computed from scratch (the engine keeps them in a StaticIndex)."""
    index = StaticIndex.build(ns, runtime=runtime)
    return index.report(name)


@dataclass(frozen=True, slots=True)
class _Row:
    """What one policy's static evaluation says about one backend in its scope."""

    matched: bool
    eligible: bool
    exclusion: StaticExclusion | None


def _row(
    policy: CompiledPolicy, backend: BackendView, *, runtime: RuntimeState, namespace: str
) -> _Row | None:
    """The (policy, backend) row; None when the backend is out of the policy's scope."""
    if not policy.in_scope(backend):
        return None
    models = sorted(m for m in backend.models if policy.match_prefix(m) is not None)
    if not models:
        if not backend.models:
            return _Row(matched=False, eligible=False, exclusion=None)
        any_model = backend.models[min(backend.models)]
        candidate = Candidate(backend, any_model, runtime.backend(namespace, backend.name))
        found = _static(policy, candidate, capabilities=RequiredCapabilities())
        exclusion = _static_exclusion(policy, found) if found is not None else None
        return _Row(matched=False, eligible=False, exclusion=exclusion)
    cell = runtime.backend(namespace, backend.name)
    first: Exclusion | None = None
    for model in models:
        found = _static(policy, Candidate(backend, backend.models[model], cell))
        if found is None:
            return _Row(matched=True, eligible=True, exclusion=None)
        first = first or found
    assert first is not None
    return _Row(matched=True, eligible=False, exclusion=_static_exclusion(policy, first))


def never_routes(
    ns: NamespaceSnapshot, policy: CompiledPolicy, *, in_scope: bool | None = None
) -> tuple[str, str] | None:
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
    has_scope = in_scope if in_scope is not None else bool(ns.in_scope(policy))
    if spec.model_patterns and spec.backend_selector is not None and not has_scope:
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


def _static_exclusion(policy: CompiledPolicy, exclusion: Exclusion) -> StaticExclusion:
    return StaticExclusion(
        exclusion.backend,
        policy.name,
        exclusion.reconciler,
        exclusion.reason_code,
        exclusion.reason,
        exclusion.suggested_action,
    )


class StaticIndex:
    """Every policy report of a namespace and the same exclusions by backend, kept as one row
    per (policy, backend in its scope) and maintained incrementally: `advance` re-evaluates
    only the rows of the backends that changed (spec, health or credentials) and of the
    policies that changed, so the status writer's lookups cost O(1) and a change costs
    O(policies) per changed backend and O(backends) per changed policy, never both.

    `rows_evaluated` and `builds` count the work done, for tests and benchmarks.
    """

    def __init__(self, ns: NamespaceSnapshot, *, runtime: RuntimeState) -> None:
        self.ns = ns
        self._runtime = runtime
        self._rows: dict[str, dict[str, _Row]] = {}
        self._policies: dict[str, CompiledPolicy] = {}
        self._facts: dict[str, tuple[str | None, tuple[str, str] | None]] = {}
        self._reports: dict[str, PolicyReport] = {}
        self._by_backend: dict[str, list[StaticExclusion]] = {}
        self.rows_evaluated = 0
        self.builds = 1
        for policy in ns.policies:
            self._evaluate_policy(policy)
        self._policy_facts()
        for name in ns.backends:
            self._index_backend(name)

    @classmethod
    def build(cls, ns: NamespaceSnapshot, *, runtime: RuntimeState) -> StaticIndex:
        return cls(ns, runtime=runtime)

    @property
    def reports(self) -> dict[str, PolicyReport]:
        return {p.name: self.report(p.name) for p in self.ns.policies}

    @property
    def by_backend(self) -> dict[str, list[StaticExclusion]]:
        return self._by_backend

    def report(self, name: str) -> PolicyReport:
        """The policy's report, materialised from its rows once per change of them."""
        found = self._reports.get(name)
        if found is not None:
            return found
        policy = self._policies.get(name)
        if policy is None:
            return PolicyReport()
        shadowed, alias = self._facts.get(name, (None, None))
        rows = self._rows.get(name, {})
        report = PolicyReport(
            shadowed_by=shadowed,
            alias_error=alias,
            never_routes=never_routes(self.ns, policy, in_scope=bool(rows)),
        )
        for backend in sorted(rows):
            row = rows[backend]
            if row.matched:
                report.matched_backends.append(backend)
                if row.eligible:
                    report.eligible_backends.append(backend)
            if row.exclusion is not None:
                report.exclusions.append(row.exclusion)
        if not report.matched_backends:
            report.no_backends = report.never_routes or _no_backend_offers(self.ns, policy)
        self._reports[name] = report
        return report

    def advance(
        self, ns: NamespaceSnapshot, *, changed: NamespaceChange | None, facts: Iterable[str]
    ) -> bool:
        """Move to `ns`, `changed` being what changed since the snapshot this index was built
        from (None: unknown) and `facts` the backends whose health or credentials changed.
        False when the index cannot follow (changes unknown): build a new one."""
        if changed is None:
            return False
        old = self.ns
        self.ns = ns
        if changed.policies:
            self._advance_policies(old, ns)
        names = set(changed.backends) | {n for n in facts if n in ns.backends or n in old.backends}
        for name in names:
            self._evaluate_backend(name)
        return True

    def _advance_policies(self, old: NamespaceSnapshot, ns: NamespaceSnapshot) -> None:
        """Rows of policies whose compiled form is unchanged are kept; the others re-evaluated."""
        kept = {p.name: p for p in old.policies}
        wanted = {p.name for p in ns.policies}
        for name in list(self._rows):
            if name not in wanted:
                self._drop_policy(name)
        for policy in ns.policies:
            if kept.get(policy.name) is not policy:
                self._drop_policy(policy.name)
                self._evaluate_policy(policy)
        self._policy_facts()
        self._reports.clear()
        self._by_backend.clear()
        for name in ns.backends:
            self._index_backend(name)

    def _drop_policy(self, name: str) -> None:
        self._rows.pop(name, None)
        self._policies.pop(name, None)

    def _evaluate_policy(self, policy: CompiledPolicy) -> None:
        rows: dict[str, _Row] = {}
        runtime, namespace = self._runtime, self.ns.namespace
        scope = self.ns.in_scope(policy)
        for backend in scope:
            row = _row(policy, backend, runtime=runtime, namespace=namespace)
            if row is not None:
                rows[backend.name] = row
        self.rows_evaluated += len(scope)
        self._rows[policy.name] = rows
        self._policies[policy.name] = policy
        self._reports.pop(policy.name, None)

    def _evaluate_backend(self, name: str) -> None:
        backend = self.ns.backends.get(name)
        runtime, namespace = self._runtime, self.ns.namespace
        for policy in self.ns.policies:
            rows = self._rows.setdefault(policy.name, {})
            row = (
                _row(policy, backend, runtime=runtime, namespace=namespace)
                if backend is not None
                else None
            )
            self.rows_evaluated += backend is not None
            if row is None:
                if rows.pop(name, None) is not None:
                    self._reports.pop(policy.name, None)
            elif rows.get(name) != row:
                rows[name] = row
                self._reports.pop(policy.name, None)
        self._index_backend(name)

    def _index_backend(self, name: str) -> None:
        """by_backend[name]: the backend's exclusions in policy order (precedence, name)."""
        found = [
            row.exclusion
            for p in self.ns.policies
            if (row := self._rows.get(p.name, {}).get(name)) is not None
            and row.exclusion is not None
        ]
        if found:
            self._by_backend[name] = found
        else:
            self._by_backend.pop(name, None)

    def _policy_facts(self) -> None:
        """Shadowing and alias errors: functions of the namespace's policies alone."""
        self._facts = {
            p.name: (shadowed_by(self.ns, p), alias_error(self.ns, p)) for p in self.ns.policies
        }


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
