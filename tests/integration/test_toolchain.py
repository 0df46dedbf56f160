"""The cached Go-built tools report the versions tools/build.sh pins.

The version ldflags matter beyond cosmetics: helm feeds the server's gitVersion
into `.Capabilities.KubeVersion`, and without them it would read v0.0.0-master.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from nexus_testkit.localcluster import Cluster, repo_root

pytestmark = pytest.mark.integration

BUILD_SCRIPT = (repo_root() / "tools" / "build.sh").read_text()


def pinned(variable: str) -> str:
    """The value tools/build.sh assigns to `variable` (e.g. K8S_VERSION=v1.35.4)."""
    match = re.search(rf"^{variable}=(\S+)", BUILD_SCRIPT, re.MULTILINE)
    assert match is not None, f"{variable} is not pinned in tools/build.sh"
    return match.group(1)


def run(*argv: str | Path) -> str:
    """stdout and stderr of a tool (grpcurl prints its version on stderr)."""
    result = subprocess.run(
        [str(a) for a in argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.strip()


def write_chart(directory: Path) -> Path:
    """A one-ConfigMap chart that records the Kubernetes version helm believes in."""
    (directory / "templates").mkdir(parents=True)
    (directory / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (directory / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
        "data:\n  kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}\n"
    )
    return directory


def test_kube_apiserver_reports_pinned_version(bin_dir: Path) -> None:
    assert run(bin_dir / "kube-apiserver", "--version") == f"Kubernetes {pinned('K8S_VERSION')}"


def test_etcd_reports_pinned_version(bin_dir: Path) -> None:
    first_line = run(bin_dir / "etcd", "--version").splitlines()[0]
    assert first_line == f"etcd Version: {pinned('ETCD_VERSION').removeprefix('v')}"


def test_helm_reports_pinned_version(bin_dir: Path) -> None:
    assert run(bin_dir / "helm", "version", "--template", "{{.Version}}") == pinned("HELM_VERSION")


def test_grpcurl_and_ghz_report_pinned_versions(bin_dir: Path) -> None:
    assert run(bin_dir / "grpcurl", "--version").split()[-1] == pinned("GRPCURL_VERSION")
    assert run(bin_dir / "ghz", "--version") == pinned("GHZ_VERSION")


def test_helm_renders_offline_for_the_kubernetes_minor_it_was_built_against(
    bin_dir: Path, tmp_path: Path
) -> None:
    chart = write_chart(tmp_path / "probe")

    rendered = run(bin_dir / "helm", "template", "probe", chart)

    assert f'kubeVersion: "v1.{pinned("HELM_K8S_MINOR")}.0"' in rendered


@pytest.mark.usefixtures("local_control_plane")  # the pinned version is our build's
def test_server_reports_pinned_version_within_kubectl_skew(cluster: Cluster) -> None:
    versions = json.loads(cluster.kubectl("version", "-o", "json").stdout)

    server, kubectl = versions["serverVersion"], versions["clientVersion"]
    assert server["gitVersion"] == pinned("K8S_VERSION")
    assert abs(int(kubectl["minor"]) - int(server["minor"])) <= 1


@pytest.mark.usefixtures("local_control_plane")  # the pinned version is our build's
def test_helm_installs_a_chart_seeing_the_live_server_version(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    chart = write_chart(tmp_path / "probe")

    cluster.helm("install", "probe", str(chart), "--namespace", namespace)

    config_map = json.loads(
        cluster.kubectl("get", "configmap", "probe", "-n", namespace, "-o", "json").stdout
    )
    assert config_map["data"]["kubeVersion"] == pinned("K8S_VERSION")
    releases = json.loads(cluster.helm("list", "--namespace", namespace, "-o", "json").stdout)
    assert [(r["name"], r["status"]) for r in releases] == [("probe", "deployed")]
