"""The Reconciler protocol and the pipeline that runs reconcilers in order.

Error policies: a FailClosed reconciler that raises rejects the request with
`reconciler_failed` naming it; a FailOpen one is logged, traced and skipped.
When the candidates run out the pipeline stops and decides: Queue when some backend was
excluded only for capacity — it is held, then run (as a dry run) through the stages after the
one that held it, selection aside, and must pass them all — Reject (with every reason) otherwise.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Coroutine, Iterator, Sequence
from enum import StrEnum
from time import perf_counter_ns
from typing import Any, NamedTuple, Protocol, TypeVar, cast, runtime_checkable

from nexus_operator.api import BudgetState

from . import reasons, stages
from .intent import RoutingIntent
from .verdict import Exclusion, QueueDecision, RejectDecision, TraceEntry
from .views import Candidate

log = logging.getLogger(__name__)

DEFAULT_RETRY_AFTER_MS = 1000
# TraceEntry(...) goes through the NamedTuple's Python-level __new__; building the tuple
# directly is half the cost, and the pipeline builds one per stage per decision.
_new_tuple = tuple.__new__
T = TypeVar("T")


class ReconcileErrorPolicy(StrEnum):
    FAIL_OPEN = "FailOpen"
    FAIL_CLOSED = "FailClosed"


class ReconcileError(Exception):
    """Raised by a reconciler that cannot do its job; its error policy decides what follows."""


@runtime_checkable
class Reconciler(Protocol):
    """One stage. `reconcile` may be a plain function or a coroutine function.

    `error_policy` may be left out by plug-ins written against the seed: they then fail open."""

    @property
    def name(self) -> str: ...

    @property
    def error_policy(self) -> ReconcileErrorPolicy: ...

    def reconcile(self, intent: RoutingIntent) -> Awaitable[None] | None: ...


class _Stage(NamedTuple):
    reconciler: Reconciler
    name: str
    trusted: bool
    fail_open: bool
    selects: bool


def _fails_open(reconciler: object) -> bool:
    """Only a declared FailClosed fails closed: a plug-in that declares no error policy (or
    one this version does not know) fails open, as SPEC §3 sets for plug-ins."""
    declared = getattr(reconciler, "error_policy", ReconcileErrorPolicy.FAIL_OPEN)
    return bool(declared != ReconcileErrorPolicy.FAIL_CLOSED)


class ReconcilerPipeline:
    """Reconcilers in order. Built-ins are trusted to exclude through the intent; anything else
    is checked after it runs so a plug-in cannot restore a backend or drop one silently."""

    __slots__ = ("_stages", "_steps", "is_async", "reconcilers")

    def __init__(self, reconcilers: Sequence[Reconciler]) -> None:
        self.reconcilers = tuple(reconcilers)
        self.is_async = any(inspect.iscoroutinefunction(r.reconcile) for r in self.reconcilers)
        self._stages = tuple(
            _Stage(
                r,
                r.name,
                getattr(r, "trusted", False) is True,
                _fails_open(r),
                r.name == stages.SELECTION,
            )
            for r in self.reconcilers
        )
        # What the loop reads of each stage, unpacked once: (stage, name, reconcile, inline).
        self._steps = tuple(
            (s, s.name, s.reconciler.reconcile, s.trusted and not self.is_async)
            for s in self._stages
        )

    async def execute(self, intent: RoutingIntent) -> None:
        """The one loop: every stage in order, then the capacity check. Async stages are awaited
        only in a pipeline built with one (`is_async`, fixed at construction), so a synchronous
        pipeline never suspends and `execute_sync` drives this very coroutine to its end.

        Trusted (built-in) stages of a synchronous pipeline run inline, with their bookkeeping
        (trace entry, timing) written out here instead of through a `_StageRun`: they are most
        of every decision, and a context manager per stage costs more than some stages do."""
        stages, is_async = self._stages, self.is_async
        annotations = intent.annotations
        trace = annotations.trace_entries
        for stage, name, reconcile, inline in self._steps:
            if intent.decision is not None or (
                not intent.candidate_backends and annotations.exclusions
            ):
                break
            if not inline:
                await _run_stage(stage, intent, is_async=is_async)
                continue
            intent.begin_stage(name)
            before = intent.candidate_backends
            marker = len(annotations.exclusions)
            started = perf_counter_ns()
            try:
                result = reconcile(intent)
                if result is not None:
                    _ensure_sync(result, name)
            except Exception as exc:
                _StageRun.after_failure(
                    intent, stage, before=before, marker=marker, started=started, exc=exc
                )
                continue
            elapsed = (perf_counter_ns() - started) / 1000
            after = len(intent.candidate_backends)
            trace.append(
                _new_tuple(
                    TraceEntry, (name, len(before), after, elapsed, intent.end_stage(), "ok")
                )
            )
        check = _CapacityCheck.needed(stages, intent)
        if check is not None:
            probe = check.probe
            for stage in check.stages():
                await _run_stage(stage, probe, is_async=is_async)
        _conclude(intent, check)

    def execute_sync(self, intent: RoutingIntent) -> None:
        """Run `execute` in the calling thread. A pipeline with an async stage runs on a private
        event loop, which Python allows only where no loop is running: there, await execute()."""
        if not self.is_async:
            run_to_end(self.execute(intent))
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(self.execute(intent))
            return
        raise TypeError(
            "this pipeline has async reconcilers and an event loop is running in this thread: "
            "await pipeline.execute(intent) (or Router.select_backend_async) instead"
        )


async def _run_stage(stage: _Stage, intent: RoutingIntent, *, is_async: bool) -> None:
    """One stage under a `_StageRun` (plug-ins, async pipelines, the capacity check's probe)."""
    with _StageRun(intent, stage):
        result = stage.reconciler.reconcile(intent)
        if result is not None:
            if is_async and inspect.isawaitable(result):
                await result
            else:
                _ensure_sync(result, stage.name)


def run_to_end(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that completes without suspending (a decision whose pipelines
    are all synchronous), computed in the calling thread with no event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coroutine.close()
    raise RuntimeError("a synchronous decision suspended: an async stage ran in a sync pipeline")


class _StageRun:
    """One stage's bookkeeping: trace entry, only-add check, and its error policy on failure.

    What a fail-open rollback needs is kept at no cost for trusted stages: they replace
    `candidate_backends` instead of editing it, so the list they start with stays intact and a
    reference suffices. Untrusted stages get a copy, which the only-add check needs anyway, and
    the intent fields a plug-in could set."""

    __slots__ = ("before", "count", "intent", "marker", "settings", "stage", "started")

    def __init__(self, intent: RoutingIntent, stage: _Stage) -> None:
        self.intent = intent
        self.stage = stage

    def __enter__(self) -> None:
        intent, stage = self.intent, self.stage
        intent.begin_stage(stage.name)
        candidates = intent.candidate_backends
        self.count = len(candidates)
        self.marker = len(intent.annotations.exclusions)
        if stage.trusted:
            self.before = candidates
            self.settings = None
        else:
            self.before = list(candidates)
            self.settings = _Settings.of(intent)
        self.started = perf_counter_ns()

    @classmethod
    def after_failure(
        cls,
        intent: RoutingIntent,
        stage: _Stage,
        *,
        before: list[Candidate],
        marker: int,
        started: int,
        exc: Exception,
    ) -> None:
        """Apply the error policy of a trusted stage that the pipeline ran inline."""
        run = cls(intent, stage)
        run.before, run.count, run.marker = before, len(before), marker
        run.settings, run.started = None, started
        run._failed(exc)

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> bool:
        if exc is None:
            self._record()
            return False
        if not isinstance(exc, Exception):
            return False
        self._failed(exc)
        return True

    def _record(self) -> None:
        intent, stage = self.intent, self.stage
        if not stage.trusted:
            intent.restore_only_add(self.before, stage.name)
        elapsed = (perf_counter_ns() - self.started) / 1000
        after = len(intent.candidate_backends)
        entry = TraceEntry(stage.name, self.count, after, elapsed, intent.end_stage())
        intent.annotations.trace_entries.append(entry)

    def _failed(self, exc: Exception) -> None:
        intent, stage, count = self.intent, self.stage, self.count
        name = stage.name
        elapsed = (perf_counter_ns() - self.started) / 1000
        message = f"{type(exc).__name__}: {exc}"
        intent.end_stage()
        if stage.fail_open:
            intent.rollback(self.before, self.marker)
            if self.settings is not None:
                self.settings.restore(intent)
            log.warning("reconciler %s failed open: %s", name, message)
            entry = TraceEntry(name, count, count, elapsed, f"skipped: {message}", "skipped")
            intent.annotations.trace_entries.append(entry)
            return
        log.error("reconciler %s failed closed: %s", name, message)
        entry = TraceEntry(name, count, count, elapsed, message, "failed")
        intent.annotations.trace_entries.append(entry)
        failure = Exclusion(
            backend="",
            reconciler=name,
            reason_code=reasons.RECONCILER_FAILED,
            reason=f"{name} failed: {message}",
            suggested_action="check the operator logs; the request was rejected because this "
            "reconciler fails closed",
            model=intent.model,
        )
        intent.decision = RejectDecision(reasons.RECONCILER_FAILED, failure.reason, (failure,))


class _Settings(NamedTuple):
    """The intent fields besides candidates and exclusions that a plug-in may set."""

    model: str
    budget_state: BudgetState | None
    estimated_cost: float | None
    penalize_open: bool
    custom_data: dict[str, Any]

    @classmethod
    def of(cls, intent: RoutingIntent) -> _Settings:
        a = intent.annotations
        return cls(
            intent.model, a.budget_state, a.estimated_cost, a.penalize_open, dict(a.custom_data)
        )

    def restore(self, intent: RoutingIntent) -> None:
        a = intent.annotations
        intent.model = self.model
        a.budget_state, a.estimated_cost, a.penalize_open = (
            self.budget_state,
            self.estimated_cost,
            self.penalize_open,
        )
        a.custom_data = self.custom_data


class _CapacityCheck:
    """Whether a backend held for capacity was excluded *only* for capacity (SPEC §3): each
    held backend joins a dry-run probe right after the stage that held it and goes through
    every later stage but selection. Built only when the candidates ran out with something
    held, so a routed decision never pays for it."""

    __slots__ = ("_stages", "held", "probe")

    def __init__(
        self,
        all_stages: tuple[_Stage, ...],
        intent: RoutingIntent,
        held: list[tuple[str, Candidate]],
    ) -> None:
        self._stages = all_stages
        self.held = held
        self.probe = intent.capacity_probe()

    @classmethod
    def needed(cls, all_stages: tuple[_Stage, ...], intent: RoutingIntent) -> _CapacityCheck | None:
        if intent.decision is not None or intent.candidate_backends:
            return None
        held = intent.held_for_capacity
        if not held:
            return None
        names = [stage.name for stage in all_stages]
        first = names.index(held[0][0]) if held[0][0] in names else len(names)
        later = any(not stage.selects for stage in all_stages[first + 1 :])
        return cls(all_stages, intent, held) if later else None

    def stages(self) -> Iterator[_Stage]:
        """Stages to run on the probe, admitting held backends as their holding stage passes."""
        probe, held = self.probe, self.held
        joined = 0
        for stage in self._stages:
            if probe.decision is not None:
                return
            if probe.candidate_backends and not stage.selects:
                yield stage
            start = joined
            while joined < len(held) and held[joined][0] == stage.name:
                joined += 1
            if joined > start:
                probe.admit(c for _, c in held[start:joined])

    def conclude(self, intent: RoutingIntent) -> QueueDecision | RejectDecision:
        """Queue if a held backend passed; else Reject, giving each held backend the reason it
        would not be served even with capacity free instead of its at_capacity exclusion."""
        probe = self.probe
        intent.annotations.trace_entries.extend(
            entry._replace(message=_capacity_note(entry.message))
            for entry in probe.annotations.trace_entries
        )
        if isinstance(probe.decision, RejectDecision):
            return probe.decision
        if probe.candidate_backends:
            wait = _estimated_wait_ms(probe.candidate_backends)
            return QueueDecision(
                reason=reasons.AT_CAPACITY, estimated_wait_ms=wait, retry_after_ms=wait
            )
        found = {e.backend: e for e in probe.annotations.exclusions}
        held = {c.backend.name for _, c in self.held}
        return _reject(
            intent,
            [
                found.get(e.backend, e) if e.backend in held else e
                for e in intent.annotations.exclusions
            ],
        )


def _capacity_note(message: str) -> str:
    return f"capacity check: {message}" if message else "capacity check"


def _conclude(intent: RoutingIntent, check: _CapacityCheck | None) -> None:
    if intent.decision is None and not intent.candidate_backends:
        intent.decision = check.conclude(intent) if check is not None else conclude_empty(intent)


def _ensure_sync(result: object, name: str) -> None:
    if result is not None and inspect.isawaitable(result):
        _close(result)
        raise ReconcileError(
            f"{name} returned an awaitable but its reconcile is not `async def`: declare it "
            "`async def reconcile` so the pipeline knows at build time to await it"
        )


def conclude_empty(intent: RoutingIntent) -> QueueDecision | RejectDecision:
    """No candidate left and no stage after the capacity check to pass: Queue when a backend
    was held for capacity, else Reject with every exclusion."""
    held = [c for _, c in intent.held_for_capacity]
    if held:
        wait = _estimated_wait_ms(held)
        return QueueDecision(
            reason=reasons.AT_CAPACITY, estimated_wait_ms=wait, retry_after_ms=wait
        )
    return _reject(intent, intent.annotations.exclusions)


def _reject(intent: RoutingIntent, exclusions: Sequence[Exclusion]) -> RejectDecision:
    reason = f"no eligible backend for {intent.model!r}: {len(exclusions)} excluded"
    return RejectDecision(reasons.NO_ELIGIBLE_BACKENDS, reason, tuple(exclusions))


def _estimated_wait_ms(full: Sequence[Candidate]) -> int:
    """The shortest time-to-first-token EMA among the saturated backends, else one second."""
    ttfts = [c.runtime.ttft_ms for c in full if c.runtime.ttft_ms is not None]
    return max(1, round(min(ttfts))) if ttfts else DEFAULT_RETRY_AFTER_MS


def _close(result: Awaitable[object]) -> None:
    close = getattr(result, "close", None)
    if callable(close):
        close()
