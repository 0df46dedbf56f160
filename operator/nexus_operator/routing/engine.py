"""RoutingEngine: snapshot → policy → plan → pipeline → Decision, plus usage accounting.

One decide loop (`_decide`, a coroutine) serves both doors: `route_async`/`explain_async` await
it (the gRPC servicer does, on its event loop); `route`/`explain` drive it to its end in the
calling thread, which works because a pipeline without async plug-ins never suspends — each
pipeline knows that from the moment it is built. A policy that names an async plug-in needs the
async door; `route` raises AsyncReconcilerError for it before anything changed. `explain` has
no side effects at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from time import perf_counter_ns
from types import MappingProxyType
from typing import NamedTuple, Protocol

from nexus_operator.api import Accounting, BudgetState, RoutingPolicySpec
from nexus_operator.pipeline import (
    CandidatePlan,
    Exclusion,
    QueueDecision,
    ReconcilerFactory,
    ReconcilerPipeline,
    RequestRequirements,
    RouteDecision,
    RoutingIntent,
    TraceEntry,
    build_pipeline,
    reasons,
    run_to_end,
)
from nexus_operator.pipeline.plan import StaticFilter
from nexus_operator.pipeline.plugins import UnavailableReconciler
from nexus_operator.pipeline.runtime import (
    BackendRuntime,
    PolicyRuntime,
    RejectedRecord,
    RoutedRecord,
)

from .attempts import Attempt, early_reject, fallback_requests
from .decision import BackendRef, Decision, Outcome, UsageReport
from .identity_cache import IdentityCache
from .policies import CompiledPolicy
from .registry import Registry
from .replan import rebuilt
from .reports import PolicyReport, StaticExclusion, StaticIndex
from .slots import DEFAULT_SLOT_TIMEOUT, SlotLedger
from .snapshot import NamespaceSnapshot

Clock = Callable[[], datetime]
REASON_MAX = 1024
# A decision whose backend another serving process filled in the meantime is decided again
# (the capacity check then sees the full backend); this many times at most.
SLOT_RACE_RETRIES = 16


class AsyncReconcilerError(TypeError):
    """The matched policy runs an async plug-in: use route_async / explain_async."""


class SlotContendedError(RuntimeError):
    """Every re-decision lost its slot to another serving process (not seen in practice)."""


class _SlotLost(Exception):
    """The chosen backend reached maxConcurrency between the decision and taking its slot."""


class EngineEvents(Protocol):
    """What a serving worker's engine did, for the control process to account (status, budget
    ledger, the other workers). Called synchronously; implementations only enqueue."""

    def routed(self, record: RoutedEvent) -> None: ...

    def queued(self, namespace: str, policy: str) -> None: ...

    def rejected(self, namespace: str, policy: str, *, record: RejectedRecord) -> None: ...

    def usage(self, report: UsageReport, *, released: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class RoutedEvent:
    namespace: str
    backend: str
    policy: str | None
    record: RoutedRecord
    estimated_spend: float | None


@dataclass(slots=True)
class _Compiled:
    """Pipelines and plans for one NamespaceSnapshot. The next snapshot of the namespace
    inherits them, less what its changes touch: a backend change drops the plans of the models
    that backend lists (before or after), a policy change drops everything."""

    snapshot: NamespaceSnapshot
    pipelines: dict[str | None, ReconcilerPipeline] = field(default_factory=dict)
    plans: dict[tuple[str | None, str], CandidatePlan] = field(default_factory=dict)
    # Plans a backend change dropped, not rebuilt yet: the next build starts from them.
    replaced: dict[tuple[str | None, str], CandidatePlan] = field(default_factory=dict)
    # Requested model → what `_prepare` found for it (resolved model, policy, pipeline, plan),
    # for requests that reach a pipeline: one lookup per decision instead of four. Bounded by
    # the names that resolve to an offered model; this snapshot's pipelines and plans never
    # change once built, so neither do these.
    routes: dict[str, tuple[str, CompiledPolicy | None, ReconcilerPipeline, CandidatePlan]] = field(
        default_factory=dict
    )


@dataclass(slots=True)
class _Static:
    """The namespace's static index and the fact-log serial it was last brought up to date with."""

    serial: int
    index: StaticIndex


@dataclass(slots=True)
class EngineCounters:
    """Work done for registry changes (tests pin that it follows what changed)."""

    plans_built: int = 0
    plans_dropped: int = 0
    static_checks: int = 0
    plans_kept: int = 0
    pipelines_built: int = 0
    static_builds: int = 0


class _History(NamedTuple):
    trace: list[TraceEntry]
    exclusions: list[Exclusion]
    exclusion_counts: Mapping[tuple[str, str], int]
    shared: tuple[Exclusion, ...]

    @classmethod
    def of(cls, attempts: list[Attempt]) -> _History:
        """Every attempt's trace and exclusions, and the exclusions counted by (reconciler,
        reason code): a plan's static block is counted by its precomputed counts, so only the
        exclusions the request itself caused are counted one by one.

        Most decisions are one attempt whose exclusions are exactly its plan's static blocks
        (or none): their history is the intent's own lists and the block's read-only counts,
        with nothing copied or counted."""
        if len(attempts) == 1 and (intent := attempts[0].intent) is not None:
            own = intent.annotations.exclusions
            static = intent.static_prefix
            if static is None and not own:
                return cls(intent.annotations.trace_entries, own, _NO_COUNTS, ())
            if static is not None and len(static.applied) == len(own):
                return cls(intent.annotations.trace_entries, own, static.counts, static.applied)
        trace: list[TraceEntry] = []
        exclusions: list[Exclusion] = []
        counts: dict[tuple[str, str], int] = {}
        shared: tuple[Exclusion, ...] = ()
        for attempt in attempts:
            trace.extend(attempt.trace)
            own = attempt.exclusions
            static = attempt.intent.static_prefix if attempt.intent is not None else None
            start = 0
            if static is not None:
                start = len(static.applied)
                if not exclusions:
                    shared = static.applied
                for key, count in static.counts.items():
                    counts[key] = counts.get(key, 0) + count
            for exclusion in own[start:] if start else own:
                key = (exclusion.reconciler, exclusion.reason_code)
                counts[key] = counts.get(key, 0) + 1
            exclusions.extend(own)
        return cls(trace, exclusions, counts, shared)


_NO_COUNTS: Mapping[tuple[str, str], int] = MappingProxyType({})


class _Context(NamedTuple):
    ns: NamespaceSnapshot
    compiled: _Compiled
    now: datetime
    dry_run: bool


class RoutingEngine:
    def __init__(
        self,
        registry: Registry,
        *,
        plugins: Mapping[str, ReconcilerFactory] | None = None,
        clock: Clock | None = None,
        default_spec: RoutingPolicySpec | None = None,
        slot_timeout: timedelta = DEFAULT_SLOT_TIMEOUT,
    ) -> None:
        """`default_spec` is what applies when no policy matches (SPEC defaults unless given)."""
        self.registry = registry
        self._plugins = plugins
        self._clock = clock or (lambda: datetime.now(UTC))
        self._default_spec = default_spec or RoutingPolicySpec()
        self._compiled: dict[str, _Compiled] = {}
        self._static: dict[str, _Static] = {}
        self.counters = EngineCounters()
        self._slots = SlotLedger(slot_timeout)
        # A decision's printable backend (user-info stripped from its URL), once per view.
        self._refs = IdentityCache(BackendRef.of)
        self.events: EngineEvents | None = None

    # Decisions

    def route(self, req: RequestRequirements) -> Decision:
        return run_to_end(self._decide(req, dry_run=False, in_thread=True))

    def explain(self, req: RequestRequirements) -> Decision:
        return run_to_end(self._decide(req, dry_run=True, in_thread=True))

    async def route_async(self, req: RequestRequirements) -> Decision:
        """The same decision as `route`, also for policies with async plug-ins (it suspends only
        while one of those runs)."""
        return await self._decide(req, dry_run=False, in_thread=False)

    async def explain_async(self, req: RequestRequirements) -> Decision:
        return await self._decide(req, dry_run=True, in_thread=False)

    async def _decide(
        self, req: RequestRequirements, *, dry_run: bool, in_thread: bool
    ) -> Decision:
        """The one decide loop: the primary model, then its fallbacks until one routes.
        `in_thread` (route/explain) refuses an async pipeline before anything ran or changed.
        A decision whose slot another serving process took first is made again."""
        for _ in range(SLOT_RACE_RETRIES):
            ctx = self._context(req, dry_run=dry_run)
            attempts: list[Attempt] = []
            pending = [req]  # the request, then (once it was rejected) its fallbacks
            while pending:
                attempt = self._prepare(ctx, pending.pop())
                pipeline, intent = attempt.pipeline, attempt.intent
                if pipeline is not None and intent is not None:
                    if in_thread and pipeline.is_async:
                        raise AsyncReconcilerError(
                            f"policy {attempt.policy_name!r} uses an async reconciler: "
                            "await route_async() / explain_async()"
                        )
                    await pipeline.execute(intent)
                attempts.append(attempt)
                if isinstance(attempt.result, RouteDecision):
                    break
                if len(attempts) == 1:
                    pending = fallback_requests(attempt, req)[::-1]
            try:
                return self._finish(ctx, req, attempts=attempts)
            except _SlotLost:
                continue
        raise SlotContendedError(f"no in-flight slot after {SLOT_RACE_RETRIES} decisions")

    def _context(self, req: RequestRequirements, *, dry_run: bool) -> _Context:
        compiled = self._compiled_for(req.namespace)
        return _Context(compiled.snapshot, compiled, self._clock(), dry_run)

    def _compiled_for(self, namespace: str) -> _Compiled:
        ns = self.registry.snapshot.namespace(namespace)
        compiled = self._compiled.get(namespace)
        if compiled is None or compiled.snapshot is not ns:
            compiled = self._successor(compiled, ns)
            self._compiled[namespace] = compiled
        return compiled

    def _successor(self, old: _Compiled | None, ns: NamespaceSnapshot) -> _Compiled:
        """Pipelines and plans for `ns`, keeping those of `old` its changes leave valid."""
        if old is None:
            return _Compiled(ns)
        changed = ns.changes_since(old.snapshot)
        if changed is None or changed.policies:
            self.counters.plans_dropped += len(old.plans)
            return _Compiled(ns)
        models: set[str] = set()
        for name in changed.backends:
            for view in (old.snapshot.backends.get(name), ns.backends.get(name)):
                if view is not None:
                    models.update(view.models)
        plans = {key: plan for key, plan in old.plans.items() if key[1] not in models}
        replaced = dict(old.replaced)
        replaced.update((key, plan) for key, plan in old.plans.items() if key[1] in models)
        self.counters.plans_dropped += len(old.plans) - len(plans)
        self.counters.plans_kept += len(plans)
        return _Compiled(ns, pipelines=old.pipelines, plans=plans, replaced=replaced)

    def _prepare(self, ctx: _Context, req: RequestRequirements) -> Attempt:
        route = ctx.compiled.routes.get(req.model)
        if route is None:
            return self._prepare_first(ctx, req)
        model, policy, pipeline, plan = route
        intent = RoutingIntent(req, plan=plan, dry_run=ctx.dry_run, now=ctx.now)
        intent.model = model
        return Attempt(req.model, model, policy, intent=intent, pipeline=pipeline)

    def _prepare_first(self, ctx: _Context, req: RequestRequirements) -> Attempt:
        """`_prepare` for a requested model this snapshot has not routed yet."""
        started = perf_counter_ns()
        resolution = ctx.ns.resolve(req.model)
        if resolution.error_code is not None:
            early, trace = early_reject(
                requested=req.model,
                code=resolution.error_code,
                reason=resolution.message,
                suggested_action="fix the aliases so every chain ends at a model within 3 hops",
                started=started,
            )
            return Attempt(req.model, req.model, None, early=early, early_trace=trace)
        model = resolution.model
        policy = ctx.ns.match(model)
        pipeline = self._pipeline(ctx, policy)
        plan = self._plan(ctx, policy, model=model, pipeline=pipeline)
        if plan is None:
            return self._not_found(ctx, req, model=model, policy=policy, started=started)
        ctx.compiled.routes[req.model] = (model, policy, pipeline, plan)
        intent = RoutingIntent(req, plan=plan, dry_run=ctx.dry_run, now=ctx.now)
        intent.model = model
        return Attempt(req.model, model, policy, intent=intent, pipeline=pipeline)

    def _not_found(
        self,
        ctx: _Context,
        req: RequestRequirements,
        *,
        model: str,
        policy: CompiledPolicy | None,
        started: int,
    ) -> Attempt:
        available = ctx.ns.available_models(policy)
        early, trace = early_reject(
            requested=req.model,
            code=reasons.MODEL_NOT_FOUND,
            reason=f"no backend in scope offers model {model!r}",
            suggested_action="use one of availableModels, or add a Backend that lists the model",
            started=started,
        )
        return Attempt(
            req.model, model, policy, early=early, early_trace=trace, available_models=available
        )

    def _pipeline(self, ctx: _Context, policy: CompiledPolicy | None) -> ReconcilerPipeline:
        key = policy.name if policy is not None else None
        pipeline = ctx.compiled.pipelines.get(key)
        if pipeline is None:
            runtime = self.registry.runtime
            ns = ctx.ns.namespace
            pipeline = build_pipeline(
                policy.spec if policy is not None else self._default_spec,
                runtime=runtime,
                scope=(ns, key),
                spend=runtime.policy(ns, key) if key is not None else None,
                plugins=self._plugins,
            )
            ctx.compiled.pipelines[key] = pipeline
            self.counters.pipelines_built += 1
        return pipeline

    def _plan(
        self,
        ctx: _Context,
        policy: CompiledPolicy | None,
        *,
        model: str,
        pipeline: ReconcilerPipeline,
    ) -> CandidatePlan | None:
        key = (policy.name if policy is not None else None, model)
        plan = ctx.compiled.plans.get(key)
        if plan is not None:
            return plan
        views = ctx.ns.offering(policy, model)
        previous = ctx.compiled.replaced.pop(key, None)
        if not views:
            return None
        filters = [r for r in pipeline.reconcilers if isinstance(r, StaticFilter)]
        plan, checks = rebuilt(
            previous, model=model, views=views, runtime=self.registry.runtime, filters=filters
        )
        ctx.compiled.plans[key] = plan
        self.counters.plans_built += 1
        self.counters.static_checks += checks
        return plan

    # Outcome and side effects

    def _finish(
        self, ctx: _Context, req: RequestRequirements, *, attempts: list[Attempt]
    ) -> Decision:
        history = _History.of(attempts)
        primary = attempts[0]
        for attempt in attempts:
            result = attempt.result
            if isinstance(result, RouteDecision):
                return self._routed(
                    ctx, req, primary=primary, attempt=attempt, result=result, history=history
                )
        for attempt in attempts:
            result = attempt.result
            if isinstance(result, QueueDecision):
                return self._queued(
                    ctx, req, primary=primary, attempt=attempt, result=result, history=history
                )
        return self._rejected(ctx, req, attempts=attempts, history=history)

    def _routed(
        self,
        ctx: _Context,
        req: RequestRequirements,
        *,
        primary: Attempt,
        attempt: Attempt,
        result: RouteDecision,
        history: _History,
    ) -> Decision:
        fallback = attempt is not primary
        reason = f"fallback:{primary.model}:{result.reason}" if fallback else result.reason
        assert attempt.intent is not None
        decision = Decision(
            outcome=Outcome.ROUTED,
            model=attempt.model,
            reason=reason,
            backend=self._refs(result.candidate.backend),
            policy=attempt.policy_name,
            cost_estimate=result.cost_estimate,
            budget_state=attempt.intent.annotations.budget_state,
            fallback_used=fallback,
            trace=history.trace,
            exclusions=history.exclusions,
            exclusion_counts=history.exclusion_counts,
            shared_exclusions=history.shared,
            request_id=req.request_id,
        )
        if not ctx.dry_run:
            self._commit_route(ctx, req, attempt=attempt, result=result, decision=decision)
        return decision

    def _commit_route(
        self,
        ctx: _Context,
        req: RequestRequirements,
        *,
        attempt: Attempt,
        result: RouteDecision,
        decision: Decision,
    ) -> None:
        cell = result.candidate.runtime
        backend = result.candidate.backend
        if not self._slots.take(cell, backend.key, request_id=req.request_id, now=ctx.now):
            raise _SlotLost
        policy = attempt.policy
        record = RoutedRecord(ctx.now, attempt.model, backend.name, decision.reason)
        spend: PolicyRuntime | None = None
        estimated_spend: float | None = None
        if policy is not None:
            spend = self.registry.runtime.policy(backend.namespace, policy.name)
            budget = policy.spec.budget
            if budget is not None and budget.accounting is Accounting.ESTIMATED:
                estimated_spend = result.cost_estimate
        _account(cell, spend, record=record, estimated_spend=estimated_spend, count=1)
        if self.events is not None:
            self.events.routed(
                RoutedEvent(
                    namespace=backend.namespace,
                    backend=backend.name,
                    policy=policy.name if policy is not None else None,
                    record=record,
                    estimated_spend=estimated_spend,
                )
            )

    def account_routed(self, event: RoutedEvent, *, count: int = 1) -> None:
        """Counters and estimated spend of routed decisions made on a serving worker, which
        sends `count` decisions to one backend as one event: the last record, the summed spend."""
        runtime = self.registry.runtime
        spend = runtime.policy(event.namespace, event.policy) if event.policy is not None else None
        _account(
            runtime.backend(event.namespace, event.backend),
            spend,
            record=event.record,
            estimated_spend=event.estimated_spend,
            count=count,
        )

    def _queued(
        self,
        ctx: _Context,
        req: RequestRequirements,
        *,
        primary: Attempt,
        attempt: Attempt,
        result: QueueDecision,
        history: _History,
    ) -> Decision:
        if not ctx.dry_run and primary.policy is not None:
            policy = primary.policy
            self.registry.runtime.policy(policy.namespace, policy.name).count_queued()
            if self.events is not None:
                self.events.queued(policy.namespace, policy.name)
        return Decision(
            outcome=Outcome.QUEUED,
            model=attempt.model,
            reason=result.reason,
            policy=attempt.policy_name,
            budget_state=self._budget_state(ctx, attempt),
            fallback_used=attempt is not primary,
            retry_after_ms=result.retry_after_ms,
            estimated_wait_ms=result.estimated_wait_ms,
            trace=history.trace,
            exclusions=history.exclusions,
            exclusion_counts=history.exclusion_counts,
            shared_exclusions=history.shared,
            request_id=req.request_id,
        )

    def _rejected(
        self,
        ctx: _Context,
        req: RequestRequirements,
        *,
        attempts: list[Attempt],
        history: _History,
    ) -> Decision:
        primary = attempts[0]
        rejections = [
            e
            for a in attempts
            if a.result is not None and not isinstance(a.result, RouteDecision | QueueDecision)
            for e in a.result.reasons
        ]
        first = primary.result
        code = (
            first.reason_code
            if first is not None and not isinstance(first, RouteDecision | QueueDecision)
            else reasons.NO_ELIGIBLE_BACKENDS
        )
        if not ctx.dry_run and primary.policy is not None:
            policy = primary.policy
            texts = [_reject_text(e.backend, e.reason) for e in rejections[:16]]
            record = RejectedRecord(ctx.now, req.model, texts)
            self.registry.runtime.policy(policy.namespace, policy.name).count_rejected(record)
            if self.events is not None:
                self.events.rejected(policy.namespace, policy.name, record=record)
        return Decision(
            outcome=Outcome.REJECTED,
            model=primary.model,
            reason=code,
            policy=primary.policy_name,
            budget_state=self._budget_state(ctx, primary),
            rejections=rejections,
            available_models=primary.available_models,
            trace=history.trace,
            exclusions=history.exclusions,
            exclusion_counts=history.exclusion_counts,
            shared_exclusions=history.shared,
            request_id=req.request_id,
        )

    def _budget_state(self, ctx: _Context, attempt: Attempt) -> BudgetState | None:
        """As the Budget stage saw it, else from the matched policy's spend: the stage does not
        run when the model is unknown or the candidates ran out before it, yet SPEC §5 omits
        budget status only for a policy without a monthly limit."""
        if attempt.intent is not None and attempt.intent.annotations.budget_state is not None:
            return attempt.intent.annotations.budget_state
        policy = attempt.policy
        budget = policy.spec.budget if policy is not None else None
        if policy is None or budget is None:
            return None
        spend = self.registry.runtime.policy(policy.namespace, policy.name)
        return budget.state(spend.spent_at(ctx.now))

    # Usage, slots and status reports

    def report_usage(self, report: UsageReport) -> bool:
        """Spend, error window, TTFT (and latency when probes are off); releases the slot.

        False, with only the slot released, when the namespace holds no such Backend (a typo,
        or one deleted since the Route): the caller is told instead of silently ignored, and
        nothing unknown reaches the metrics' labels."""
        released = self.release_slot(report.namespace, report.backend, request_id=report.request_id)
        if report.backend not in self.registry.snapshot.namespace(report.namespace).backends:
            return False
        self.account_usage(report)
        if self.events is not None:
            self.events.usage(report, released=released)
        return True

    def account_usage(self, report: UsageReport, *, spend: bool = True) -> tuple[str, str] | None:
        """Everything a report changes but the slot: outcome window, TTFT, latency, spend.
        Returns the policy charged, if any."""
        now = self._clock()
        ns = self.registry.snapshot.namespace(report.namespace)
        view = ns.backends.get(report.backend)
        key = (report.namespace, report.backend)
        if view is not None:
            cell = self.registry.runtime.backend(*key)
            cell.record_outcome(success=report.success, now=now)
            if report.ttft_ms is not None:
                cell.record_ttft(report.ttft_ms)
            if report.latency_ms is not None and not view.health_check_enabled:
                cell.record_latency(report.latency_ms)
        policy = self._report_policy(ns, report) if spend else None
        if policy is None:
            return None
        budget = policy.spec.budget
        if budget is not None and budget.accounting is Accounting.ESTIMATED:
            return None
        cost = report.cost_usd
        if cost is None:
            model = view.models.get(report.model) if view is not None else None
            cost = model.cost(report.input_tokens, report.output_tokens) if model else 0.0
        if cost <= 0:
            return None
        self.registry.runtime.policy(policy.namespace, policy.name).add_spend(cost, now)
        return (policy.namespace, policy.name)

    @staticmethod
    def _report_policy(ns: NamespaceSnapshot, report: UsageReport) -> CompiledPolicy | None:
        if report.policy:
            return ns.policy(report.policy)
        resolution = ns.resolve(report.model)
        return ns.match(resolution.model) if resolution.error_code is None else None

    def release_slot(self, namespace: str, backend: str, *, request_id: str | None) -> bool:
        """Release a routed request's slot without accounting anything (the gateway, when the
        proxy reports that another endpoint served the request, accounts usage there). False
        when this engine holds no such slot (a serving worker then asks the others)."""
        return self._slots.release((namespace, backend), request_id)

    def expire_slots(self, now: datetime) -> int:
        return self._slots.expire(now)

    def policy_report(self, namespace: str, name: str) -> PolicyReport:
        return self._static_index(namespace).report(name)

    def plugin_problems(self, namespace: str, name: str) -> list[tuple[str, str]]:
        """(name, problem) of each of the policy's plug-ins that could not be built (no such
        entry point, or its factory refused the config): those stages are skipped on every
        request (plug-ins fail open), which only the policy's status can tell a user."""
        compiled = self._compiled_for(namespace)
        policy = compiled.snapshot.policy(name)
        if policy is None or not policy.spec.reconcilers:
            return []
        ctx = _Context(compiled.snapshot, compiled, self._clock(), True)
        return [
            (stage.name, stage.problem)
            for stage in self._pipeline(ctx, policy).reconcilers
            if isinstance(stage, UnavailableReconciler)
        ]

    def backend_exclusions(self, namespace: str, name: str) -> list[StaticExclusion]:
        return list(self._static_index(namespace).by_backend.get(name, ()))

    def static_index(self, namespace: str) -> StaticIndex:
        return self._static_index(namespace)

    def _static_index(self, namespace: str) -> StaticIndex:
        """Brought up to date on each read with what changed since the last: the backends the
        snapshot journal names, and those whose health or credential problem changed (from the
        runtime's fact log), so an unchanged namespace costs two comparisons."""
        ns = self.registry.snapshot.namespace(namespace)
        log = self.registry.runtime.facts
        state = self._static.get(namespace)
        if state is not None and state.index.ns is ns and state.serial == log.serial:
            return state.index
        if state is not None:
            moved = log.since(state.serial)
            names = [k[1] for k in moved if k[0] == namespace] if moved is not None else None
            changed = ns.changes_since(state.index.ns) if names is not None else None
            if names is not None and state.index.advance(ns, changed=changed, facts=names):
                state.serial = log.serial
                return state.index
        self.counters.static_builds += 1
        index = StaticIndex.build(ns, runtime=self.registry.runtime)
        self._static[namespace] = _Static(log.serial, index)
        return index


def _reject_text(backend: str, reason: str) -> str:
    text = f"{backend}: {reason}" if backend else reason
    return text[:REASON_MAX]


def _account(
    cell: BackendRuntime,
    spend: PolicyRuntime | None,
    *,
    record: RoutedRecord,
    estimated_spend: float | None,
    count: int,
) -> None:
    """Count `count` routed decisions, `record` the last, on the backend and its policy."""
    cell.selected_total += count
    cell.last_selected_time = record.time
    if spend is None:
        return
    spend.count_routed(record, count=count)
    if estimated_spend is not None:
        spend.add_spend(estimated_spend, record.time)
