"""Selection strategies: each picks one candidate and says why, in the SPEC's reason format.

Candidates arrive in name order. Unknown latency counts as 0 ms (pLat 100) so a backend
without measurements still gets traffic, and thereby measurements.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from nexus_operator.api import Zone

from .views import Candidate


@dataclass(frozen=True, slots=True)
class SmartWeights:
    priority: int = 50
    load: int = 30
    latency: int = 20


class Pick(NamedTuple):
    candidate: Candidate
    reason: str


def smart_score(
    candidate: Candidate, weights: SmartWeights, *, penalize_open: bool, ttft_threshold_ms: int
) -> float:
    """score = (pPrio·wP + pLoad·wL + pLat·wLat)/100, halved for Open zones under budget
    pressure, scaled down by the TTFT penalty."""
    backend, runtime = candidate.backend, candidate.runtime
    p_prio = 100 - min(backend.priority, 100)
    p_load = 100 - min(runtime.in_flight, 100)
    latency = runtime.latency_ms
    p_lat = 100.0 if latency is None else 100 - min(latency / 10, 100.0)
    score = (p_prio * weights.priority + p_load * weights.load + p_lat * weights.latency) / 100
    if penalize_open and backend.zone is Zone.OPEN:
        score /= 2
    ttft = runtime.ttft_ms
    t = ttft_threshold_ms
    if ttft is not None and 0 < t < ttft:
        score *= 1 - min((ttft - t) / t, 1.0)
    return score


def pick_smart(
    by_priority: Sequence[Candidate],
    is_excluded: Callable[[str], bool],
    weights: SmartWeights,
    *,
    penalize_open: bool,
    ttft_threshold_ms: int,
) -> Pick:
    """Highest score, ties by name ascending.

    `by_priority` is sorted by (priority, name). Load, latency and the penalties can only lower
    a score below its priority part plus the full load and latency weights, so once that bound
    falls below the best score found no later candidate can win and the scan stops.
    """
    dynamic_max = 100 * weights.load + 100 * weights.latency
    best: Candidate | None = None
    best_score = -1.0
    for candidate in by_priority:
        name = candidate.backend.name
        if is_excluded(name):
            continue
        static = (100 - min(candidate.backend.priority, 100)) * weights.priority
        if best is not None and (static + dynamic_max) / 100 < best_score:
            break
        score = smart_score(
            candidate, weights, penalize_open=penalize_open, ttft_threshold_ms=ttft_threshold_ms
        )
        if score > best_score or (
            score == best_score and best is not None and name < best.backend.name
        ):
            best, best_score = candidate, score
    if best is None:
        raise ValueError("pick_smart needs at least one candidate")
    return Pick(best, f"highest_score:{best.backend.name}:{best_score:.1f}")


def pick_round_robin(candidates: Sequence[Candidate], counter: int) -> Pick:
    chosen = candidates[counter % len(candidates)]
    return Pick(chosen, f"round_robin:{chosen.backend.name}")


def pick_priority(by_priority: Sequence[Candidate], is_excluded: Callable[[str], bool]) -> Pick:
    for candidate in by_priority:
        if not is_excluded(candidate.backend.name):
            return Pick(
                candidate, f"priority:{candidate.backend.name}:{candidate.backend.priority}"
            )
    raise ValueError("pick_priority needs at least one candidate")


def pick_random(candidates: Sequence[Candidate], rng: random.Random) -> Pick:
    chosen = rng.choice(candidates)
    return Pick(chosen, f"random:{chosen.backend.name}")


def pick_least_latency(candidates: Sequence[Candidate]) -> Pick:
    """Lowest latency EMA; candidates are in name order, so min() keeps the first of a tie."""
    chosen = min(candidates, key=_latency)
    return Pick(chosen, f"least_latency:{chosen.backend.name}:{round(_latency(chosen))}")


def _latency(candidate: Candidate) -> float:
    latency = candidate.runtime.latency_ms
    return 0.0 if latency is None else latency
