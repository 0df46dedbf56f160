"""Prometheus metrics of the status writer (registered by `run`, one controller per process)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .budget_ledger import BudgetLedger
from .status_writer import COUNTERS, REFRESH, SPEND, URGENT, StatusWriter

CLASSES = {URGENT: "urgent", SPEND: "spend", COUNTERS: "counters", REFRESH: "refresh"}


class StatusWriterCollector:
    def __init__(self, writer: StatusWriter, ledger: BudgetLedger) -> None:
        self._writer = writer
        self._ledger = ledger

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "nexus_status_staleness_seconds",
            "Age of the oldest status change found but not yet written to the API server.",
            value=self._writer.staleness_s(),
        )
        queued = GaugeMetricFamily(
            "nexus_status_queued",
            "Objects waiting for a status write, by class (urgent: conditions, health state, "
            "exclusions, observedGeneration, budget state; spend; counters; refresh: probe "
            "latency/time).",
            labels=["class"],
        )
        age = GaugeMetricFamily(
            "nexus_status_queue_age_seconds",
            "How long the oldest object of each class has waited for its status write.",
            labels=["class"],
        )
        queue = self._writer.queue
        for priority, name in CLASSES.items():
            queued.add_metric([name], queue.count(priority))
            age.add_metric([name], queue.oldest_age_s(priority))
        yield queued
        yield age
        yield CounterMetricFamily(
            "nexus_status_writes",
            "Status patches the API server accepted.",
            value=self._ledger.patches,
        )
        yield GaugeMetricFamily(
            "nexus_status_write_qps_limit",
            "Client-side rate limit of status writes (--status-qps).",
            value=self._writer.limiter.qps,
        )
