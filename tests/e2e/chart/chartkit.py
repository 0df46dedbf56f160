"""Helpers for the Helm chart tests: rendering with the real helm, installing into the real
local control plane, and the chart's ServiceAccount as a second identity.

Releases get unique names because the chart creates cluster-scoped objects (ClusterRoles and
their bindings are named after the release) and the control plane is shared by the session.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from kubernetes import client

from nexus_testkit.localcluster import Cluster, repo_root

CHART = repo_root() / "charts" / "nexus-operator"
GENERATED_CRDS = repo_root() / "crds"
SIDECAR_VALUES = CHART / "examples" / "router-sidecar-values.yaml"

# Every optional resource on (but the ServiceMonitor, whose CRD belongs to prometheus-operator).
EVERYTHING_ON = (
    "--set=replicaCount=2",
    "--set=podDisruptionBudget.enabled=true",
    "--set=networkPolicy.enabled=true",
    "--set=autoscaling.enabled=true",
    "--set=rbac.secrets.enabled=true",
    "--set=tls.enabled=true",
    "--set=tls.secretName=nexus-grpc-tls",
    "--set=tls.clientCA=true",
    "--set=grafanaDashboard.enabled=true",
)

Manifest = dict[str, Any]
HelmTemplate = Callable[..., list[Manifest]]


def documents(text: str) -> list[Manifest]:
    """The non-empty YAML documents of a multi-document stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[Manifest], kind: str) -> Manifest:
    found = of_kind(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def release_name() -> str:
    return f"nx{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Release:
    """An installed release and where its ServiceAccount lives."""

    name: str
    namespace: str
    service_account: str


def generated_crd_names() -> list[str]:
    return sorted(
        documents(path.read_text())[0]["metadata"]["name"] for path in GENERATED_CRDS.glob("*.yaml")
    )


def ensure_crds(cluster: Cluster) -> None:
    """The generated CRDs exist and serve (for releases installed with crds.enabled=false).

    Established is not enough: right after it a LIST can still answer 429 "storage is
    (re)initializing", so wait until both kinds list."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", f"--filename={GENERATED_CRDS}")
    for name in generated_crd_names():
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    deadline = time.monotonic() + 60
    while cluster.kubectl("get", ",".join(generated_crd_names()), "-A", check=False).returncode:
        assert time.monotonic() < deadline, "CRDs established but not serving"
        time.sleep(0.2)


def adopt_crds(cluster: Cluster, *, release: str, namespace: str) -> None:
    """Hand CRDs another test already created over to `release`, as a user adopting a
    `kubectl apply`-installed operator into Helm would (Helm refuses unowned objects)."""
    for name in generated_crd_names():
        exists = cluster.kubectl("get", f"crd/{name}", check=False).returncode == 0
        if not exists:
            continue
        cluster.kubectl(
            "annotate",
            f"crd/{name}",
            "--overwrite",
            f"meta.helm.sh/release-name={release}",
            f"meta.helm.sh/release-namespace={namespace}",
        )
        cluster.kubectl("label", f"crd/{name}", "--overwrite", "app.kubernetes.io/managed-by=Helm")


def install(cluster: Cluster, *, namespace: str, args: tuple[str, ...] = ()) -> Release:
    """`helm install` without --wait: there is no kubelet, so pods never become ready."""
    name = release_name()
    cluster.helm(
        "install", name, str(CHART), f"--namespace={namespace}", "--set=crds.enabled=false", *args
    )
    return Release(name=name, namespace=namespace, service_account=f"{name}-nexus-operator")


def mint_token(cluster: Cluster, release: Release) -> str:
    """A real ServiceAccount token from the TokenRequest API (what the kubelet would mount)."""
    with cluster.api_client() as api:
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
        )
        reply = client.CoreV1Api(api).create_namespaced_service_account_token(
            release.service_account, release.namespace, request
        )
    return str(reply.status.token)
