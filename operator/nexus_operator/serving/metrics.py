"""Prometheus metrics of the routing endpoint.

The hot path only bumps plain ints in dicts (a few hundred nanoseconds per decision); the
Prometheus families are built when the endpoint is scraped. Gauges that mirror runtime state
(in-flight per backend, health, budget spend and state) are copied from the registry by
refresh_gauges on the event loop that owns it, so routing never touches them. That copy walks
every Backend, so it is made on demand: a scrape asks for it and waits (at most
GAUGE_WAIT_S) for the loop's next housekeeping tick (every 0.5 s) to make it; with no scrape,
an idle operator at 10,000 Backends does not walk them twice a second.

Scrapes run on prometheus_client's HTTP thread while the event loop mutates the counters:
every read copies a dict first (a single C-level operation under the GIL).

Cardinality is bounded by the cluster's objects, never by what clients send: namespace, policy,
backend and model labels are only ever names the registry holds (a model a client asks for
that no Backend in the namespace lists is counted with model=""; a usage report for a policy
the namespace does not hold with policy=""; one for an unknown backend is refused before it
is counted). So series ≤ policies × backends × listed models × outcomes, and deleting objects
ends their series' growth (counters keep their last value until the process restarts).
"""

from __future__ import annotations

import platform
import threading
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .. import __version__
from ..api import BudgetState, HealthState
from ..routing import Decision, Registry, UsageReport

# How long a scrape waits for the event loop to copy fresh gauges (then serves the last copy).
GAUGE_WAIT_S = 1.0

K = TypeVar("K")
LabelValues = TypeVar("LabelValues", bound=tuple[str, ...])
DECISION_BUCKETS = (25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3)
RECONCILER_BUCKETS = (1e-6, 5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 500e-6, 1e-3, 10e-3)
_RECONCILER_BOUNDS_US = tuple(round(bound * 1e6, 6) for bound in RECONCILER_BUCKETS)


class _Histogram:
    """Bucket counts and sum; cumulated only when exported."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def exported(self) -> tuple[list[tuple[str, float]], float]:
        counts = list(self.counts)
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip([*map(str, self.bounds), "+Inf"], counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets, self.total


@dataclass(frozen=True)
class DecisionCounts:
    """A serving process's decision counters as plain data, shipped to the control process."""

    outcomes: dict[str, int]
    errors: dict[tuple[str, str], int]
    latency: tuple[list[int], float]
    reconcilers: dict[str, tuple[list[int], float]]
    exclusions: dict[tuple[str, str], int]
    # (namespace, policy, backend, model, outcome); policy/backend/model "" when none applies.
    routes: dict[tuple[str, str, str, str, str], int] = field(default_factory=dict)
    fallbacks: dict[tuple[str, str], int] = field(default_factory=dict)
    # (namespace, policy, backend, direction "input"|"output")
    tokens: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    spend: dict[tuple[str, str, str], float] = field(default_factory=dict)


def _add_amounts(into: dict[K, float], more: dict[K, float]) -> None:
    for key, amount in more.items():
        into[key] = into.get(key, 0.0) + amount


def _add(into: dict[K, int], more: dict[K, int]) -> None:
    for key, count in more.items():
        into[key] = into.get(key, 0) + count


def _add_histogram(into: _Histogram, counts: list[int], *, total: float) -> None:
    for index, count in enumerate(counts):
        into.counts[index] += count
    into.total += total


class RoutingMetrics:
    """Decision metrics (fed by the gRPC service) plus registry-backed gauges, as one collector.

    In the control process of a replica with serving workers, the decision counters are the
    sum of what every worker last reported (`absorb`), the gauges its own.
    """

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._outcomes: dict[str, int] = {}
        self._errors: dict[tuple[str, str], int] = {}
        self._latency = _Histogram(DECISION_BUCKETS)
        # Per reconciler, bucketed and summed in µs as the trace reports them (seconds on export).
        self._reconcilers: dict[str, _Histogram] = {}
        self._exclusions: dict[tuple[str, str], int] = {}
        self._routes: dict[tuple[str, str, str, str, str], int] = {}
        self._fallbacks: dict[tuple[str, str], int] = {}
        self._tokens: dict[tuple[str, str, str, str], int] = {}
        self._spend: dict[tuple[str, str, str], float] = {}
        self._backend_gauges: tuple[tuple[str, str, int, int], ...] = ()
        self._budget_gauges: tuple[tuple[str, str, float, BudgetState], ...] = ()
        self._absorbed: dict[int, DecisionCounts] = {}
        # The last namespace's model index, kept while the registry snapshot is the same one.
        self._model_index: tuple[object, str, Mapping[str, object]] | None = None
        # Scrape thread → loop: gauges wanted; loop → scrape thread: gauges copied.
        self._gauges_wanted = threading.Event()
        self._gauges_copied = threading.Event()
        self._housekept = False
        self.gauge_copies = 0

    def counts(self) -> DecisionCounts:
        """This process's decision counters (copies)."""
        return DecisionCounts(
            outcomes=dict(self._outcomes),
            errors=dict(self._errors),
            latency=(list(self._latency.counts), self._latency.total),
            reconcilers={
                name: (list(h.counts), h.total / 1e6) for name, h in self._reconcilers.items()
            },
            exclusions=dict(self._exclusions),
            routes=dict(self._routes),
            fallbacks=dict(self._fallbacks),
            tokens=dict(self._tokens),
            spend=dict(self._spend),
        )

    def absorb(self, source: int, counts: DecisionCounts) -> None:
        """Keep serving worker `source`'s latest counters; they are added when scraped."""
        self._absorbed[source] = counts

    def _totals(self) -> tuple[DecisionCounts, _Histogram, dict[str, _Histogram]]:
        own = self.counts()
        latency = _Histogram(DECISION_BUCKETS)
        _add_histogram(latency, own.latency[0], total=own.latency[1])
        reconcilers: dict[str, _Histogram] = {}
        for counts in [own, *self._absorbed.copy().values()]:
            if counts is not own:
                _add(own.outcomes, counts.outcomes)
                _add(own.errors, counts.errors)
                _add(own.exclusions, counts.exclusions)
                _add(own.routes, counts.routes)
                _add(own.fallbacks, counts.fallbacks)
                _add(own.tokens, counts.tokens)
                _add_amounts(own.spend, counts.spend)
                _add_histogram(latency, counts.latency[0], total=counts.latency[1])
            for name, (buckets, total) in counts.reconcilers.items():
                histogram = reconcilers.get(name)
                if histogram is None:
                    histogram = reconcilers[name] = _Histogram(RECONCILER_BUCKETS)
                _add_histogram(histogram, buckets, total=total)
        return own, latency, reconcilers

    def observe_decision(self, decision: Decision, seconds: float, *, namespace: str = "") -> None:
        """Count one Route decision: outcome (overall and by policy, backend and model),
        fallbacks, latency, per-reconciler time and exclusions. Runs once per Route call, so
        its helpers are inlined and the loops skip what a decision does not have."""
        outcome: str = decision.outcome._value_  # the plain str, without the enum property
        outcomes = self._outcomes
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        backend = decision.backend
        if backend is not None:
            namespace, backend_name = backend.namespace, backend.name
        else:
            backend_name = ""
        policy = decision.policy or ""
        route = (namespace, policy, backend_name, self._known(namespace, decision.model), outcome)
        routes = self._routes
        routes[route] = routes.get(route, 0) + 1
        if decision.fallback_used:
            fallback = (namespace, policy)
            self._fallbacks[fallback] = self._fallbacks.get(fallback, 0) + 1
        latency = self._latency  # inlined observe()
        latency.counts[bisect_left(latency.bounds, seconds)] += 1
        latency.total += seconds
        reconcilers = self._reconcilers
        bounds_us = _RECONCILER_BOUNDS_US
        for entry in decision.trace:
            histogram = reconcilers.get(entry.reconciler)
            if histogram is None:
                histogram = reconcilers[entry.reconciler] = _Histogram(RECONCILER_BUCKETS)
            elapsed_us = entry.elapsed_us  # inlined observe(), in µs: no division per entry
            histogram.counts[bisect_left(bounds_us, elapsed_us)] += 1
            histogram.total += elapsed_us
        excluded = decision.count_exclusions()
        if excluded:
            exclusions = self._exclusions
            for key, count in excluded.items():
                exclusions[key] = exclusions.get(key, 0) + count

    def _known(self, namespace: str, model: str) -> str:
        """`model` when a Backend in the namespace lists it, else "" (bounded labels)."""
        snapshot = self._registry.snapshot
        cached = self._model_index
        if cached is None or cached[0] is not snapshot or cached[1] != namespace:
            cached = self._model_index = (
                snapshot,
                namespace,
                snapshot.namespace(namespace).model_index,
            )
        return model if model in cached[2] else ""

    def observe_usage(self, report: UsageReport) -> None:
        """Count an accepted usage report: tokens and spend by policy and backend. Spend is the
        reported cost, else the backend's price for the tokens (as budgets count it)."""
        ns = self._registry.snapshot.namespace(report.namespace)
        view = ns.backends.get(report.backend)
        if view is None:
            return
        policy = report.policy if report.policy and ns.policy(report.policy) else ""
        if not policy:
            resolution = ns.resolve(report.model)
            matched = ns.match(resolution.model) if resolution.error_code is None else None
            policy = matched.name if matched is not None else ""
        key = (report.namespace, policy, report.backend)
        tokens = self._tokens
        for direction, count in (("input", report.input_tokens), ("output", report.output_tokens)):
            if count:
                token_key = (*key, direction)
                tokens[token_key] = tokens.get(token_key, 0) + count
        cost = report.cost_usd
        if cost is None:
            model = view.models.get(report.model)
            cost = model.cost(report.input_tokens, report.output_tokens) if model else 0.0
        if cost > 0:
            self._spend[key] = self._spend.get(key, 0.0) + cost

    def observe_error(self, method: str, code: str) -> None:
        """Count an RPC that ended with a non-OK status."""
        key = (method, code)
        self._errors[key] = self._errors.get(key, 0) + 1

    def describe(self) -> list[Metric]:
        """Nothing up front: lets several servers (tests) share a CollectorRegistry in turn."""
        return []

    def collect(self) -> Iterator[Metric]:
        self._fresh_gauges()
        counts, latency, reconcilers = self._totals()
        yield _build_info_family()
        yield self._decisions_family(counts)
        yield from self._dashboard_families(counts)
        yield self._latency_family(latency)
        yield from self._reconciler_families(counts, reconcilers)
        yield self._errors_family(counts)
        yield from self._backend_families()
        yield from self._budget_families()

    @staticmethod
    def _decisions_family(counts: DecisionCounts) -> Metric:
        family = CounterMetricFamily(
            "nexus_decisions", "Route decisions by outcome.", labels=["outcome"]
        )
        for outcome, count in sorted(counts.outcomes.items()):
            family.add_metric([outcome], count)
        return family

    @staticmethod
    def _dashboard_families(counts: DecisionCounts) -> Iterator[Metric]:
        yield _counter(
            "nexus_route_decisions",
            "Route decisions by namespace, policy, backend, model and outcome "
            '(policy "" = no policy matched; backend "" unless routed; model "" = not listed).',
            labels=["namespace", "policy", "backend", "model", "outcome"],
            values=counts.routes,
        )
        yield _counter(
            "nexus_fallbacks",
            "Route decisions served by a fallback model, by namespace and policy.",
            labels=["namespace", "policy"],
            values=counts.fallbacks,
        )
        yield _counter(
            "nexus_usage_tokens",
            "Tokens reported by ReportUsage, by namespace, policy, backend and direction.",
            labels=["namespace", "policy", "backend", "direction"],
            values=counts.tokens,
        )
        yield _counter(
            "nexus_usage_spend_usd",
            "Spend reported (or priced) by ReportUsage in USD, by namespace, policy and backend.",
            labels=["namespace", "policy", "backend"],
            values=counts.spend,
        )

    @staticmethod
    def _latency_family(latency: _Histogram) -> Metric:
        family = HistogramMetricFamily(
            "nexus_decision_duration_seconds", "Time to compute one Route decision."
        )
        buckets, total = latency.exported()
        family.add_metric([], buckets, total)
        return family

    @staticmethod
    def _reconciler_families(
        counts: DecisionCounts, reconcilers: dict[str, _Histogram]
    ) -> Iterator[Metric]:
        durations = HistogramMetricFamily(
            "nexus_reconciler_duration_seconds",
            "Time each reconciler spent per Route decision.",
            labels=["reconciler"],
        )
        for name, histogram in sorted(reconcilers.items()):
            buckets, total = histogram.exported()
            durations.add_metric([name], buckets, total)
        yield durations
        exclusions = CounterMetricFamily(
            "nexus_reconciler_exclusions",
            "Backends excluded in Route decisions, by reconciler and reason code.",
            labels=["reconciler", "reason_code"],
        )
        for (name, code), count in sorted(counts.exclusions.items()):
            exclusions.add_metric([name, code], count)
        yield exclusions

    @staticmethod
    def _errors_family(counts: DecisionCounts) -> Metric:
        family = CounterMetricFamily(
            "nexus_grpc_errors", "RPCs that ended with a non-OK status.", labels=["method", "code"]
        )
        for (method, code), count in sorted(counts.errors.items()):
            family.add_metric([method, code], count)
        return family

    def refresh_gauges_if_wanted(self) -> None:
        """Housekeeping tick on the registry's loop: copy the gauges when a scrape asked."""
        self._housekept = True
        if self._gauges_wanted.is_set():
            self._gauges_wanted.clear()
            self.refresh_gauges()
            self._gauges_copied.set()

    def _fresh_gauges(self) -> None:
        """On the scrape thread: have the loop copy the gauges now, if a loop does that."""
        if not self._housekept:
            return
        self._gauges_copied.clear()
        self._gauges_wanted.set()
        self._gauges_copied.wait(GAUGE_WAIT_S)

    def refresh_gauges(self) -> None:
        """Copy runtime state into the gauges; call it on the event loop that owns the registry.

        Runtime cells are created on demand and mutated by the loop, so the scrape thread only
        ever reads the immutable tuples built here.
        """
        self.gauge_copies += 1
        runtime = self._registry.runtime
        snapshot = self._registry.snapshot
        backends = []
        for backend in snapshot.backends.values():
            meta = backend.metadata
            cell = runtime.backend(meta.namespace, meta.name)
            healthy = cell.health_state is HealthState.HEALTHY
            backends.append((meta.namespace, meta.name, cell.in_flight, int(healthy)))
        budgets = []
        for policy in snapshot.policies.values():
            meta = policy.metadata
            spent = runtime.policy(meta.namespace, meta.name).spent_usd
            budget = policy.spec.budget
            current = budget.state(spent) if budget is not None else None
            if current is not None:
                budgets.append((meta.namespace, meta.name, spent, current))
        self._backend_gauges = tuple(backends)
        self._budget_gauges = tuple(budgets)

    def _backend_families(self) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily(
            "nexus_backend_in_flight",
            "Routed requests not yet reported, per backend.",
            labels=["namespace", "backend"],
        )
        healthy = GaugeMetricFamily(
            "nexus_backend_healthy",
            "1 when the backend's health state is Healthy.",
            labels=["namespace", "backend"],
        )
        for namespace, name, count, is_healthy in self._backend_gauges:
            in_flight.add_metric([namespace, name], count)
            healthy.add_metric([namespace, name], is_healthy)
        yield in_flight
        yield healthy

    def _budget_families(self) -> Iterator[Metric]:
        spent = GaugeMetricFamily(
            "nexus_budget_spent_usd",
            "Spend in the current period, per policy with a budget.",
            labels=["namespace", "policy"],
        )
        state = GaugeMetricFamily(
            "nexus_budget_state",
            "1 for the policy's current budget state (Normal, SoftLimit, HardLimit).",
            labels=["namespace", "policy", "state"],
        )
        for namespace, name, usd, current in self._budget_gauges:
            spent.add_metric([namespace, name], usd)
            for candidate in BudgetState:
                state.add_metric([namespace, name, candidate.value], int(candidate is current))
        yield spent
        yield state


def _counter(
    name: str,
    documentation: str,
    *,
    labels: list[str],
    values: Mapping[LabelValues, float],
) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for label_values, value in sorted(values.items()):
        family.add_metric(list(label_values), value)
    return family


def _build_info_family() -> Metric:
    family = GaugeMetricFamily(
        "nexus_build_info",
        "Always 1; the labels say which nexus-operator and Python serve these metrics.",
        labels=["version", "python_version"],
    )
    family.add_metric([__version__, platform.python_version()], 1)
    return family


def start_metrics_server(
    port: int, *, addr: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY
) -> int:
    """Serve /metrics on a daemon thread; returns the bound port (useful with port 0)."""
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return int(server.server_port)
