"""Optional resources whose kinds belong to other operators (prometheus-operator) install
cleanly on a cluster that does not serve them: real helm against the real kube-apiserver,
which has no monitoring.coreos.com API."""

from __future__ import annotations

import pytest
from chartkit import CHART, documents, release_name

from nexus_testkit.localcluster import Cluster

pytestmark = pytest.mark.e2e


def test_service_monitor_enabled_without_prometheus_operator_installs_and_says_why(
    cluster: Cluster, namespace: str
) -> None:
    served = cluster.kubectl("api-resources", "--api-group=monitoring.coreos.com", "-o=name")
    if "servicemonitors" in served.stdout:
        pytest.skip("this cluster serves ServiceMonitor")
    release = release_name()

    notes = cluster.helm(
        "install", release, str(CHART), f"--namespace={namespace}",
        "--set=crds.enabled=false", "--set=serviceMonitor.enabled=true",
    ).stdout  # fmt: skip

    manifest = cluster.helm("get", "manifest", release, f"--namespace={namespace}").stdout
    assert "ServiceMonitor" not in {doc["kind"] for doc in documents(manifest)}
    assert "serves no monitoring.coreos.com/v1 ServiceMonitor" in notes
    cluster.helm("uninstall", release, f"--namespace={namespace}")
