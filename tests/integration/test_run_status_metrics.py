"""`nexus-operator run` exports the status writer's metrics on /metrics whether it serves from
worker processes (the default, and the chart's) or from its own loop: the chart's alert on the
urgent queue age needs the series to exist."""

from __future__ import annotations

from pathlib import Path

import pytest
from operator_support import wait_for

from nexus_testkit.gateway import Picker, PickerError, metric_value
from nexus_testkit.localcluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nexus_crds")]

STATUS_SERIES = (
    "nexus_status_staleness_seconds",
    "nexus_status_queued",
    "nexus_status_queue_age_seconds",
    "nexus_status_writes_total",
    "nexus_status_write_qps_limit",
)


def _scrape(run: Picker) -> str | None:
    """/metrics, or None while it does not answer yet (the workers may serve first)."""
    try:
        return run.metrics()
    except PickerError:
        return None


@pytest.mark.parametrize("workers", [1, 0], ids=["serving-workers", "own-loop"])
def test_run_exports_the_status_queue_metrics(
    cluster: Cluster, namespace: str, tmp_path: Path, workers: int
) -> None:
    command = [
        "run",
        f"--kubeconfig={cluster.kubeconfig}",
        f"--namespace={namespace}",
        f"--lease-namespace={namespace}",
        "--health-address=127.0.0.1",
        "--metrics-address=127.0.0.1",
        f"--workers={workers}",
    ]
    with Picker(command, tmp_path) as run:
        text = wait_for(lambda: _scrape(run))
    assert text is not None
    for series in STATUS_SERIES:
        assert metric_value(text, series) is not None, series
    assert metric_value(text, "nexus_status_queue_age_seconds", **{"class": "urgent"}) == 0.0
