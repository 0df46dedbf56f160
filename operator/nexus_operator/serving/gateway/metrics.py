"""Prometheus metrics of the gateway: requests by outcome and status, decision time, usage.

Like serving.metrics, the hot path bumps plain ints in dicts; families are built on scrape.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ..metrics import DECISION_BUCKETS, _Histogram


class GatewayMetrics:
    def __init__(self) -> None:
        self._requests: dict[tuple[str, int], int] = {}
        self._usage: dict[tuple[str, bool], int] = {}
        self._decision = _Histogram(DECISION_BUCKETS)
        self.active_streams = 0

    def observe_request(self, outcome: str, status: int) -> None:
        key = (outcome, status)
        self._requests[key] = self._requests.get(key, 0) + 1

    def observe_decision(self, seconds: float) -> None:
        self._decision.observe(seconds)

    def observe_usage(self, *, estimated: bool, success: bool) -> None:
        key = ("estimated" if estimated else "response", success)
        self._usage[key] = self._usage.get(key, 0) + 1

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "nexus_gateway_requests",
            "Requests the ext_proc gateway handled, by outcome (ROUTED, QUEUED, REJECTED, "
            "INVALID) and the HTTP status it answered (0: forwarded, status unknown yet).",
            labels=["outcome", "status"],
        )
        for (outcome, status), count in sorted(self._requests.copy().items()):
            requests.add_metric([outcome, str(status)], count)
        yield requests
        decision = HistogramMetricFamily(
            "nexus_gateway_decision_duration_seconds",
            "Time from a complete request body to the picker's answer.",
        )
        buckets, total = self._decision.exported()
        decision.add_metric([], buckets, total)
        yield decision
        usage = CounterMetricFamily(
            "nexus_gateway_usage_reports",
            "Usage accounted from responses, by source (response: the upstream's usage; "
            "estimated: from the generated text) and success.",
            labels=["source", "success"],
        )
        for (source, success), count in sorted(self._usage.copy().items()):
            usage.add_metric([source, str(success).lower()], count)
        yield usage
        active = GaugeMetricFamily(
            "nexus_gateway_active_streams", "ext_proc streams open now (one per HTTP request)."
        )
        active.add_metric([], self.active_streams)
        yield active
