"""Selection strategies: each picks one candidate and says why, in the SPEC's reason format.

Candidates arrive in name order. Unknown latency counts as 0 ms (pLat 100) so a backend
without measurements still gets traffic, and thereby measurements.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
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


def pick_smart(
    by_priority: Sequence[Candidate],
    excluded: AbstractSet[str],
    weights: SmartWeights,
    *,
    penalize_open: bool,
    ttft_threshold_ms: int,
) -> Pick:
    """Highest score, ties by name ascending, where

        score = (pPrio·wP + pLoad·wL + pLat·wLat) / 100
        pPrio = 100 − min(priority, 100), pLoad = 100 − min(inFlight, 100),
        pLat = 100 − min(latencyMs / 10, 100)   (unknown latency: pLat = 100)

    halved for Open zones under budget pressure (`penalize_open`), and multiplied by
    1 − min((ttft − t) / t, 1) when 0 < t < ttft (t: `ttft_threshold_ms`).

    `by_priority` is sorted by (priority, name). Load, latency and the penalties can only lower
    a score below its priority part plus the full load and latency weights, so once that bound
    falls below the best score found no later candidate can win and the scan stops. This is the
    hottest loop of a decision: the formula is inlined, with no call per candidate.
    """
    w_prio, w_load, w_lat = weights.priority, weights.load, weights.latency
    dynamic_max = 100 * w_load + 100 * w_lat
    t = ttft_threshold_ms
    open_zone = Zone.OPEN
    best: Candidate | None = None
    best_name = ""
    best_score = -1.0
    for candidate in by_priority:
        backend = candidate.backend
        name = backend.name
        if name in excluded:
            continue
        priority = backend.priority
        static = (100 - (priority if priority < 100 else 100)) * w_prio
        if best is not None and (static + dynamic_max) / 100 < best_score:
            break
        runtime = candidate.runtime
        in_flight = runtime.in_flight
        latency = runtime.latency_ms
        p_lat = 100.0 if latency is None else (0.0 if latency >= 1000 else 100 - latency / 10)
        p_load = 100 - (in_flight if in_flight < 100 else 100)
        score = (static + p_load * w_load + p_lat * w_lat) / 100
        if penalize_open and backend.zone is open_zone:
            score /= 2
        ttft = runtime.ttft_ms
        if ttft is not None and 0 < t < ttft:
            score *= 1 - min((ttft - t) / t, 1.0)
        if score > best_score or (score == best_score and name < best_name):
            best, best_name, best_score = candidate, name, score
    if best is None:
        raise ValueError("pick_smart needs at least one candidate")
    return Pick(best, f"highest_score:{best_name}:{best_score:.1f}")


def pick_round_robin(candidates: Sequence[Candidate], counter: int) -> Pick:
    chosen = candidates[counter % len(candidates)]
    return Pick(chosen, f"round_robin:{chosen.backend.name}")


def pick_priority(by_priority: Sequence[Candidate], excluded: AbstractSet[str]) -> Pick:
    for candidate in by_priority:
        if candidate.backend.name not in excluded:
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
