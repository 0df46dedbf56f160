"""Prometheus families that serving workers ship to the control process (the gateway's, say),
summed over workers at scrape time: counters, histogram buckets and gauges all add up."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric


class WorkerFamilies:
    """A collector for the control process's /metrics: the latest families of every worker."""

    def __init__(self) -> None:
        self._latest: dict[int, list[Metric]] = {}

    def absorb(self, worker: int, families: list[Metric]) -> None:
        self._latest[worker] = families

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for families in self._latest.copy().values():
            for family in families:
                if family.name not in merged:
                    merged[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                    sums[family.name] = {}
                values = sums[family.name]
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    values[key] = values.get(key, 0.0) + sample.value
        for name, family in merged.items():
            for (sample_name, labels), value in sums[name].items():
                family.add_sample(sample_name, dict(labels), value)
            yield family
