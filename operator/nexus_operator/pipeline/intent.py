"""RoutingIntent: the shared state reconcilers annotate, and the only-add exclusion rules."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nexus_operator.api import Backend, BudgetState

from . import reasons, stages
from .plan import CandidatePlan, StaticFilter, StaticStage
from .requirements import RequestRequirements
from .verdict import Exclusion, RoutingDecision, TraceEntry
from .views import BackendView, Candidate


class TraceLines(list[str]):
    """The rendered trace; `contains(text)` as the seed's tests write it (any line has it)."""

    def contains(self, text: str) -> bool:
        return any(text in line for line in self)


class Annotations:
    """What reconcilers learned (the seed's RoutingAnnotations). The per-reconciler `*_excluded`
    maps are views of `exclusions`, derived on access so the decision path never builds them.

    Custom annotations, the seed's pattern: `intent.annotations.my_field = value` sets
    `custom_data["my_field"]` and the other way round (they are the instance's own dict, so
    the built-in fields pay nothing for it)."""

    __slots__ = (
        "__dict__",
        "budget_state",
        "estimated_cost",
        "exclusions",
        "penalize_open",
        "trace_entries",
    )

    def __init__(self) -> None:
        self.exclusions: list[Exclusion] = []
        self.trace_entries: list[TraceEntry] = []
        self.estimated_cost: float | None = None
        self.budget_state: BudgetState | None = None
        self.penalize_open = False

    if TYPE_CHECKING:  # custom annotations type-check as Any for plug-in authors

        def __getattr__(self, name: str) -> Any: ...

        def __setattr__(self, name: str, value: Any) -> None: ...

    @property
    def custom_data(self) -> dict[str, Any]:
        """Custom annotations by name (the same values as `annotations.<name>`)."""
        return self.__dict__

    @custom_data.setter
    def custom_data(self, data: Mapping[str, Any]) -> None:
        fields = self.__dict__
        fields.clear()
        fields.update(data)

    @property
    def trace_info(self) -> TraceLines:
        return TraceLines(entry.render() for entry in self.trace_entries)

    def excluded_by(self, reconciler: str) -> dict[str, str]:
        """backend name → reason, for one reconciler (plug-ins included)."""
        return {e.backend: e.reason for e in self.exclusions if e.reconciler == reconciler}

    @property
    def lifecycle_excluded(self) -> dict[str, str]:
        return self.excluded_by(stages.LIFECYCLE)

    @property
    def privacy_excluded(self) -> dict[str, str]:
        return self.excluded_by(stages.PRIVACY)

    @property
    def budget_excluded(self) -> dict[str, str]:
        return self.excluded_by(stages.BUDGET)

    @property
    def capability_excluded(self) -> dict[str, str]:
        return self.excluded_by(stages.CAPABILITY)

    @property
    def quality_excluded(self) -> dict[str, str]:
        return self.excluded_by(stages.QUALITY)

    @property
    def health_excluded(self) -> dict[str, str]:
        return self.excluded_by(stages.HEALTH)


class RoutingIntent:
    """One request travelling through the pipeline.

    Invariant (only-add): a backend leaves `candidate_backends` exactly once, with one
    Exclusion naming the first reconciler that excluded it, and never comes back. Excluding an
    already excluded backend is a no-op.
    """

    __slots__ = (
        "_excluded",
        "_from_plan",
        "_held",
        "_messages",
        "_stage",
        "_static",
        "annotations",
        "candidate_backends",
        "decision",
        "dry_run",
        "model",
        "now",
        "plan",
        "request_requirements",
    )

    def __init__(
        self,
        request_requirements: RequestRequirements,
        candidate_backends: Iterable[Candidate | Backend | BackendView] = (),
        *,
        plan: CandidatePlan | None = None,
        dry_run: bool = False,
        now: datetime | None = None,
    ) -> None:
        self.request_requirements = request_requirements
        self.model = request_requirements.model
        self.candidate_backends = [_as_candidate(c, self.model) for c in candidate_backends]
        self.plan = plan
        self.dry_run = dry_run
        self.now = now or datetime.now(UTC)
        self.annotations = Annotations()
        self.decision: RoutingDecision | None = None
        self._excluded: set[str] = set()
        self._held: list[tuple[str, Candidate]] | None = None
        self._messages: list[str] | None = None
        self._stage = ""
        self._static: StaticStage | None = None
        self._from_plan = False

    def trace(self, message: str) -> None:
        """Add a message to the current reconciler's trace entry (or a standalone entry)."""
        if self._stage:
            if self._messages is None:
                self._messages = []
            self._messages.append(message)
            return
        count = len(self.candidate_backends)
        entry = TraceEntry(_caller_name(), count, count, 0.0, message)
        self.annotations.trace_entries.append(entry)

    def is_excluded(self, name: str) -> bool:
        return name in self._excluded

    @property
    def excluded_names(self) -> AbstractSet[str]:
        """Names excluded so far (read-only view; hot loops test membership without a call)."""
        return self._excluded

    def exclude(
        self,
        candidate: Candidate,
        *,
        reason_code: str,
        reason: str,
        suggested_action: str = "",
        reconciler: str | None = None,
    ) -> bool:
        """Exclude one backend; False when it was already excluded."""
        exclusion = Exclusion(
            backend=candidate.backend.name,
            reconciler=reconciler or self._stage,
            reason_code=reason_code,
            reason=reason,
            suggested_action=suggested_action,
            model=self.model,
        )
        return self.exclude_many((exclusion,)) == 1

    def exclude_many(self, exclusions: Iterable[Exclusion]) -> int:
        """Record exclusions in one pass over the candidates; returns how many were new."""
        excluded = self._excluded
        fresh: list[Exclusion] = []
        for exclusion in exclusions:
            if exclusion.backend not in excluded:
                excluded.add(exclusion.backend)
                fresh.append(exclusion)
        if fresh:
            self.annotations.exclusions.extend(fresh)
            self.candidate_backends = [
                c for c in self.candidate_backends if c.backend.name not in excluded
            ]
        return len(fresh)

    def exclude_for_capacity(self, full: Iterable[tuple[Candidate, Exclusion]]) -> int:
        """Exclude backends that are at their concurrency cap, like `exclude_many`, and hold
        them with the current stage's name: when the set runs out, the pipeline queues only if
        one of them would pass every stage after that one."""
        excluded = self._excluded
        fresh = [(c, e) for c, e in full if c.backend.name not in excluded]
        if not fresh:
            return 0
        held = self._held if self._held is not None else []
        held.extend((self._stage, c) for c, _ in fresh)
        self._held = held
        return self.exclude_many(e for _, e in fresh)

    @property
    def held_for_capacity(self) -> list[tuple[str, Candidate]]:
        """(stage name, candidate) for every backend excluded only for capacity, in order."""
        return self._held or []

    def capacity_probe(self) -> RoutingIntent:
        """A dry run of this intent for backends held for capacity: no candidates yet, what is
        excluded stays excluded (so plan-based stages see exactly the admitted backends), and
        what the stages so far annotated carries over. Held backends join through `admit`."""
        probe = RoutingIntent(self.request_requirements, plan=self.plan, dry_run=True, now=self.now)
        probe.model = self.model
        probe._excluded = set(self._excluded)
        mine, theirs = self.annotations, probe.annotations
        theirs.budget_state = mine.budget_state
        theirs.estimated_cost = mine.estimated_cost
        theirs.penalize_open = mine.penalize_open
        theirs.custom_data = dict(mine.custom_data)
        return probe

    def admit(self, candidates: Iterable[Candidate]) -> None:
        """Let backends (back) into a capacity probe's candidate set, kept in name order."""
        joining = list(candidates)
        self._excluded.difference_update(c.backend.name for c in joining)
        self.candidate_backends = sorted(
            [*self.candidate_backends, *joining], key=lambda c: c.backend.name
        )

    def apply_static(self, stage: StaticFilter) -> int:
        """Apply a stage's spec-only exclusions: precomputed with a plan, evaluated without."""
        plan = self.plan
        if plan is not None:
            static = plan.static.get(stage.name)
            if static is not None:
                return self._apply_block(plan, static)
        found = (stage.static_exclusion(c) for c in self.candidate_backends)
        return self.exclude_many(e for e in found if e is not None)

    def start_from_plan(self, plan: CandidatePlan) -> None:
        """Make `plan`'s candidates this intent's, so its static blocks can be taken whole."""
        self.plan = plan
        self.candidate_backends = list(plan.candidates)
        self._from_plan = True

    def _apply_block(self, plan: CandidatePlan, static: StaticStage) -> int:
        """A plan's static block. When this intent is exactly where the static-only run was
        before the stage (the same backends excluded, the plan's other candidates left), the
        block is taken whole: its survivors become the candidates and its exclusions are
        appended in one step, with no per-exclusion check. Otherwise one by one."""
        excluded = self._excluded
        exclusions = self.annotations.exclusions
        if not (
            self._from_plan
            and plan is self.plan
            and len(self.candidate_backends) == len(plan.candidates) - len(static.before)
            and excluded == static.before
        ):
            return self.exclude_many(static.exclusions) if static.exclusions else 0
        previous = self._static.applied if self._static is not None else ()
        prefix = len(static.applied) - len(static.exclusions)
        if len(previous) == prefix == len(exclusions):
            self._static = static  # the exclusions so far are exactly the earlier blocks
        if static.exclusions:
            excluded |= static.names
            exclusions.extend(static.exclusions)
            self.candidate_backends = list(static.survivors)
        return len(static.exclusions)

    @property
    def static_prefix(self) -> StaticStage | None:
        """The last plan block taken whole while every exclusion before it came from earlier
        blocks: `annotations.exclusions` then starts with its `applied` (`counts` counts them),
        unless a plug-in edited the list by hand (check the last one's identity)."""
        static = self._static
        if static is None or not static.applied:
            return static
        exclusions, n = self.annotations.exclusions, len(static.applied)
        return static if len(exclusions) >= n and exclusions[n - 1] is static.applied[-1] else None

    def alive(self, candidates: Iterable[Candidate]) -> list[Candidate]:
        """Those of `candidates` not excluded yet."""
        excluded = self._excluded
        return [c for c in candidates if c.backend.name not in excluded]

    def begin_stage(self, name: str) -> None:
        self._stage = name
        self._messages = None

    def end_stage(self) -> str:
        """Close the current stage and return its joined trace messages."""
        messages = self._messages
        self._stage = ""
        self._messages = None
        return "; ".join(messages) if messages else ""

    def rollback(self, candidates: list[Candidate], exclusion_count: int) -> None:
        """Undo a stage that failed open, so that "skipped" means it never ran: the candidate
        set it started with, without the exclusions it recorded and without any decision."""
        exclusions = self.annotations.exclusions
        if len(exclusions) > exclusion_count:
            undone = {e.backend for e in exclusions[exclusion_count:]}
            self._excluded -= undone
            del exclusions[exclusion_count:]
            if self._held:
                self._held = [(s, c) for s, c in self._held if c.backend.name not in undone]
        self.candidate_backends = candidates
        self.decision = None

    def restore_only_add(self, before: list[Candidate], reconciler: str) -> None:
        """Enforce only-add after an untrusted reconciler edited `candidate_backends` directly:
        drop anything that was not a candidate before, give every silent removal a reason, and
        keep the order of `before` — selection relies on plan (name) order, and a plug-in that
        reordered the list must not change which backend roundRobin or leastLatency picks."""
        excluded = self._excluded
        kept = {c.backend.name for c in self.candidate_backends}
        self.candidate_backends = [
            c for c in before if c.backend.name in kept and c.backend.name not in excluded
        ]
        silent = [
            c for c in before if c.backend.name not in kept and c.backend.name not in excluded
        ]
        self.exclude_many(
            Exclusion(
                backend=c.backend.name,
                reconciler=reconciler,
                reason_code=reasons.EXCLUDED_BY_RECONCILER,
                reason=f"removed by {reconciler}",
                model=self.model,
            )
            for c in silent
        )


def _caller_name() -> str:
    """The name of the reconciler calling `trace` outside a pipeline (a unit test calling
    `reconcile` directly): its `name`, else its class name; "" from a plain function."""
    caller = sys._getframe(2).f_locals.get("self")
    if caller is None:
        return ""
    name = getattr(caller, "name", None)
    return name if isinstance(name, str) and name else type(caller).__name__


RoutingAnnotations = Annotations  # the seed's name


def _as_candidate(item: Candidate | Backend | BackendView, model: str) -> Candidate:
    if isinstance(item, Candidate):
        return item
    return Candidate.of(item, model)
