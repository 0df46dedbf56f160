"""Prometheus metrics of the status writer (registered by `run`, one controller per process)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .budget_ledger import BudgetLedger
from .status_writer import StatusWriter


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
