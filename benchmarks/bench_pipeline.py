"""In-process decision latency of the routing engine at 5, 50, 500 and 5,000 backends.

Every backend lists the requested model (the worst case: all of them are candidates), 20 % are
Open-zone cloud backends with pricing, 10 % have a concurrency cap, priorities and latencies are
random (seeded). The request matches a policy with a monthly budget. Each measured call is one
`RoutingEngine.route()`; the usage report that releases its slot is sent outside the timing.
The async figures time `route_async()` (the servicer's door to the same decide loop).

The naive figures run the same reconcilers without the per-snapshot plan (static exclusions,
priority order, bounds), as a library caller building a RoutingIntent by hand would.

The rich figures (`--rich` runs only them) add a Restricted, minTier 3 policy with required
capabilities at 50 and 500 backends: about half are excluded by spec, once per plan.

Writes benchmarks/results/pipeline.json (and pipeline_async.json, pipeline_naive.json,
pipeline_rich.json):
[{"backends", "p50_us", "p99_us", "decisions_per_s"}, ...]
"""

from __future__ import annotations

import functools
import json
import random
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from time import perf_counter_ns

from nexus_operator import api
from nexus_operator.pipeline import Candidate, RoutingIntent, build_pipeline, run_to_end
from nexus_operator.routing import Registry, RequestRequirements, RoutingEngine, UsageReport

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (5, 50, 500, 5000)
MODEL = "llama3:8b"


def make_backend(index: int, rng: random.Random) -> api.Backend:
    cloud = index % 5 == 0
    spec: dict[str, object] = {
        "type": "openai" if cloud else "ollama",
        "url": f"http://backend-{index}.bench:11434",
        "priority": rng.randint(0, 100),
        "tier": rng.randint(1, 5),
        "models": [
            {
                "id": MODEL,
                "contextLength": 8192,
                "pricing": {"inputPer1k": 0.5, "outputPer1k": 1.5} if cloud else None,
            },
            {"id": f"other-{index % 7}"},
        ],
    }
    if cloud:
        spec["credentialsSecretRef"] = {"name": "openai", "key": "token"}
    if index % 10 == 3:
        spec["maxConcurrency"] = 1000
    meta = {"name": f"backend-{index:05d}", "namespace": "bench"}
    return api.Backend.model_validate({"metadata": meta, "spec": spec})


RICH_SPEC: dict[str, object] = {
    "privacy": "restricted",
    "minTier": 3,
    "requiredCapabilities": {"minContextLength": 4096},
}
"""The feature-rich policy: static filters (privacy, tier, capabilities) exclude about half the
backends at plan time, so a decision must not pay per excluded backend."""


def make_registry(size: int, *, rich: bool = False) -> Registry:
    rng = random.Random(size)
    backends = [make_backend(i, rng) for i in range(size)]
    spec: dict[str, object] = {
        "modelPatterns": ["llama*"],
        "budget": {"monthlyLimitUsd": 1_000_000},
        **(RICH_SPEC if rich else {}),
    }
    policy = api.RoutingPolicy.model_validate(
        {"metadata": {"name": "chat", "namespace": "bench"}, "spec": spec}
    )
    registry = Registry()
    registry.replace_all(backends, [policy])
    for b in backends:
        cell = registry.runtime.backend("bench", b.metadata.name)
        cell.set_assumed_healthy()
        cell.latency_ms = rng.uniform(20, 500)
    return registry


Decider = tuple[Callable[[int], object], Callable[[int, object], None]]


def measure(decider: Decider, iterations: int) -> dict[str, float]:
    """Time `decide` only; `settle` (the usage report) runs after each sample, untimed."""
    decide, settle = decider
    for i in range(min(500, iterations)):
        settle(i, decide(i))
    samples: list[float] = []
    for i in range(iterations):
        started = perf_counter_ns()
        outcome = decide(i)
        samples.append((perf_counter_ns() - started) / 1000)
        settle(i, outcome)
    samples.sort()
    return {
        "p50_us": round(statistics.median(samples), 1),
        "p99_us": round(samples[int(len(samples) * 0.99) - 1], 1),
        "decisions_per_s": round(1e6 / statistics.fmean(samples)),
    }


def engine_decider(registry: Registry, *, awaited: bool = False) -> Decider:
    """`awaited`: time `route_async` (what the gRPC servicer awaits) driven to its end the
    way an await that never suspends drives it, instead of the in-thread `route`."""
    engine = RoutingEngine(registry)

    def decide(i: int) -> object:
        req = RequestRequirements(
            model=MODEL, estimated_tokens=500, namespace="bench", request_id=str(i)
        )
        return run_to_end(engine.route_async(req)) if awaited else engine.route(req)

    def settle(i: int, decision: object) -> None:
        """Release the slot so load stays stable from sample to sample."""
        backend = getattr(decision, "backend", None)
        if backend is not None:
            report = UsageReport(
                backend=backend.name, namespace="bench", model=MODEL, request_id=str(i)
            )
            engine.report_usage(report)

    return decide, settle


def naive_decider(registry: Registry) -> Decider:
    ns = registry.snapshot.namespace("bench")
    policy = ns.match(MODEL)
    assert policy is not None
    pipeline = build_pipeline(policy.spec, runtime=registry.runtime, scope=("bench", policy.name))
    views = ns.offering(policy, MODEL)

    def decide(i: int) -> object:
        runtime = registry.runtime
        candidates = [
            Candidate(v, v.models[MODEL], runtime.backend("bench", v.name)) for v in views
        ]
        req = RequestRequirements(model=MODEL, estimated_tokens=500, namespace="bench")
        intent = RoutingIntent(req, candidates, dry_run=True)
        pipeline.execute_sync(intent)
        return intent.decision

    return decide, lambda i, decision: None


def run(
    kind: str,
    factory: Callable[[Registry], Decider],
    *,
    sizes: tuple[int, ...] = SIZES,
    rich: bool = False,
) -> list[dict[str, float]]:
    rows = []
    for size in sizes:
        iterations = 20_000 if size <= 50 else (5_000 if size <= 500 else 1_000)
        if kind == "naive" and size >= 5000:
            iterations = 200
        row = {"backends": size, **measure(factory(make_registry(size, rich=rich)), iterations)}
        rows.append(row)
        print(
            f"{kind:6} {size:>5} backends: p50 {row['p50_us']:>8.1f} µs  p99 {row['p99_us']:>8.1f} µs  "
            f"{row['decisions_per_s']:>7} decisions/s",
            flush=True,
        )
    return rows


def main() -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    if sys.argv[1:] == ["--rich"]:
        return rich_only()
    rows = run("engine", engine_decider)
    (RESULTS / "pipeline.json").write_text(json.dumps(rows, indent=2) + "\n")
    awaited = run("async", functools.partial(engine_decider, awaited=True))
    (RESULTS / "pipeline_async.json").write_text(json.dumps(awaited, indent=2) + "\n")
    naive = run("naive", naive_decider)
    (RESULTS / "pipeline_naive.json").write_text(json.dumps(naive, indent=2) + "\n")
    return rich_only()


def rich_only() -> int:
    """The feature-rich policy at 50 and 500 backends (`--rich` runs only this)."""
    rich = run("rich", engine_decider, sizes=(50, 500), rich=True)
    (RESULTS / "pipeline_rich.json").write_text(json.dumps(rich, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
