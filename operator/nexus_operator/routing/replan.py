"""A plan rebuilt after a registry change from the plan it replaces.

A change to one Backend drops the plans of the models it lists; the next decision for such a
model builds the plan again over every Backend offering it. Built from nothing, that repeats
per Backend what did not change: a Candidate object and every static filter's check (draining,
policy privacy, tier, capabilities), ≈ 1 ms at 500 Backends, for every decision that follows
a change while Backends churn. Rebuilt from the previous plan (same policy, model and pipeline:
the engine keeps it only while the namespace's policies are unchanged), a Backend whose view
and runtime cell are the very objects the previous plan held keeps its Candidate and its
static verdicts; only the changed ones are checked.
"""

from __future__ import annotations

from collections.abc import Sequence

from nexus_operator.pipeline import BackendView, Candidate, CandidatePlan, Exclusion, RuntimeState
from nexus_operator.pipeline.plan import StaticFilter


def rebuilt(
    previous: CandidatePlan | None,
    *,
    model: str,
    views: Sequence[BackendView],
    runtime: RuntimeState,
    filters: Sequence[StaticFilter],
) -> tuple[CandidatePlan, int]:
    """The plan over `views`, and how many static checks it ran (the rest were kept)."""
    held = previous.by_key if previous is not None else {}
    kept: set[int] = set()
    candidates: list[Candidate] = []
    for view in views:
        cell = runtime.backend(view.namespace, view.name)
        old = held.get(view.key)
        if old is not None and old.backend is view and old.runtime is cell:
            kept.add(id(old))
            candidates.append(old)
        else:
            candidates.append(Candidate(view, view.models[model], cell))
    if previous is None or not kept:
        checks = len(candidates) * len(filters)
        return CandidatePlan(model=model, candidates=candidates, filters=filters), checks
    verdicts = {
        exclusion.backend: (stage, exclusion)
        for stage, static in previous.static.items()
        for exclusion in static.exclusions
    }
    stages = [_Remembered(f, kept=kept, verdicts=verdicts) for f in filters]
    plan = CandidatePlan(model=model, candidates=candidates, filters=stages)
    return plan, sum(stage.checks for stage in stages)


class _Remembered:
    """A static filter that answers for a kept candidate from the previous plan's verdicts (the
    stage that excluded it there, if any: a pure function of the candidate and the pipeline)
    and checks any other."""

    __slots__ = ("_filter", "_kept", "_verdicts", "checks", "name")

    def __init__(
        self,
        stage: StaticFilter,
        *,
        kept: set[int],
        verdicts: dict[str, tuple[str, Exclusion]],
    ) -> None:
        self.name = stage.name
        self._filter = stage
        self._kept = kept
        self._verdicts = verdicts
        self.checks = 0

    def static_exclusion(self, candidate: Candidate) -> Exclusion | None:
        if id(candidate) in self._kept:
            verdict = self._verdicts.get(candidate.backend.name)
            return verdict[1] if verdict is not None and verdict[0] == self.name else None
        self.checks += 1
        return self._filter.static_exclusion(candidate)
