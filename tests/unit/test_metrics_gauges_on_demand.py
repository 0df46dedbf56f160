"""The per-Backend gauges are copied from the registry when a scrape asks, not on every tick."""

from __future__ import annotations

import threading

from routing_factories import backend, registry

from nexus_operator.serving.metrics import RoutingMetrics


def test_housekeeping_ticks_without_a_scrape_copy_nothing() -> None:
    metrics = RoutingMetrics(registry([backend(f"b{i}") for i in range(50)]))
    for _ in range(20):
        metrics.refresh_gauges_if_wanted()
    assert metrics.gauge_copies == 0


def test_a_scrape_gets_gauges_copied_by_the_next_tick() -> None:
    metrics = RoutingMetrics(registry([backend("a"), backend("b")]))
    metrics.refresh_gauges_if_wanted()
    scraped: list[set[str]] = []

    def scrape() -> None:
        names = {
            sample.labels.get("backend", "")
            for family in metrics.collect()
            if family.name == "nexus_backend_in_flight"
            for sample in family.samples
        }
        scraped.append(names)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    while scraper.is_alive():
        metrics.refresh_gauges_if_wanted()
        scraper.join(0.01)
    assert metrics.gauge_copies == 1
    assert scraped == [{"a", "b"}]
