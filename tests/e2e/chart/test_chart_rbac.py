"""RBAC for real: the chart's ServiceAccount, with a token from the TokenRequest API, asks the
API server (SelfSubjectAccessReview via `kubectl auth can-i`) what it may do."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from chartkit import Release, ensure_crds, install, mint_token

from nexus_testkit.localcluster import Cluster

pytestmark = pytest.mark.e2e

GROUP = "nexus.routing.dev"


@dataclass(frozen=True)
class Identity:
    release: Release
    kubeconfig: Path


@pytest.fixture(scope="module")
def chart_identity(cluster: Cluster, module_namespace: str) -> Iterator[Identity]:
    ensure_crds(cluster)
    release = install(cluster, namespace=module_namespace)
    token = mint_token(cluster, release)
    kubeconfig = cluster.token_kubeconfig(token, name=release.name, namespace=module_namespace)
    yield Identity(release=release, kubeconfig=kubeconfig)
    cluster.helm("uninstall", release.name, f"--namespace={module_namespace}")


def can_i(cluster: Cluster, identity: Identity, verb: str, resource: str, *args: str) -> bool:
    """`kubectl auth can-i` as the chart's ServiceAccount: exit 0 means yes, 1 means no.
    `resource` may name a subresource as "<resource>:<subresource>"; "{lease}" is the chart's
    Lease name (the release fullname, like the ServiceAccount)."""
    resource, _, subresource = resource.format(lease=identity.release.service_account).partition(
        ":"
    )
    extra = [f"--subresource={subresource}"] if subresource else []
    result = cluster.kubectl(
        f"--kubeconfig={identity.kubeconfig}",
        "auth",
        "can-i",
        verb,
        resource,
        *extra,
        *args,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0


# (verb, resource[:subresource], where): "release" = the release namespace, "other" = another namespace,
# "cluster" = no namespace (cluster-scoped or all namespaces).
ALLOWED = [
    ("list", f"backends.{GROUP}", "other"),
    ("watch", f"backends.{GROUP}", "cluster"),
    ("get", f"routingpolicies.{GROUP}", "other"),
    ("watch", f"routingpolicies.{GROUP}", "cluster"),
    ("patch", f"backends.{GROUP}:status", "other"),
    ("patch", f"routingpolicies.{GROUP}:status", "other"),
    ("create", "events.events.k8s.io", "other"),
    ("create", "leases.coordination.k8s.io", "release"),
    ("get", "leases.coordination.k8s.io/{lease}", "release"),
    ("patch", "leases.coordination.k8s.io/{lease}", "release"),
]
DENIED = [
    ("get", "secrets", "release"),
    ("list", "secrets", "cluster"),
    ("update", f"backends.{GROUP}", "other"),
    ("update", f"backends.{GROUP}:status", "other"),
    ("patch", f"backends.{GROUP}", "other"),
    ("create", f"routingpolicies.{GROUP}", "other"),
    ("delete", f"backends.{GROUP}", "other"),
    ("get", "configmaps", "release"),
    ("create", "deployments.apps", "release"),
    ("patch", "deployments.apps", "release"),
    ("patch", "leases.coordination.k8s.io/someone-elses-lease", "release"),
    ("list", "leases.coordination.k8s.io", "release"),
    ("get", "leases.coordination.k8s.io/{lease}", "other"),
    ("patch", "events.events.k8s.io", "other"),
    ("create", "events", "other"),  # core/v1 Events: kopf's posting is off
    ("list", "namespaces", "cluster"),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io", "cluster"),
    ("create", "pods", "release"),
]


def scope(identity: Identity, where: str) -> list[str]:
    return {
        "release": [f"--namespace={identity.release.namespace}"],
        "other": ["--namespace=default"],
        "cluster": ["--all-namespaces"],
    }[where]


@pytest.mark.parametrize(("verb", "resource", "where"), ALLOWED, ids=lambda v: str(v))
def test_chart_service_account_is_allowed(
    cluster: Cluster, chart_identity: Identity, verb: str, resource: str, where: str
) -> None:
    assert can_i(cluster, chart_identity, verb, resource, *scope(chart_identity, where))


@pytest.mark.parametrize(("verb", "resource", "where"), DENIED, ids=lambda v: str(v))
def test_chart_service_account_is_denied(
    cluster: Cluster, chart_identity: Identity, verb: str, resource: str, where: str
) -> None:
    assert not can_i(cluster, chart_identity, verb, resource, *scope(chart_identity, where))


@contextmanager
def installed_watching_only(cluster: Cluster, namespace: str) -> Iterator[Identity]:
    """The chart installed in `namespace` watching only it, as its ServiceAccount; uninstalled
    on exit."""
    ensure_crds(cluster)
    release = install(
        cluster, namespace=namespace, args=(f"--set=watchNamespaces={{{namespace}}}",)
    )
    try:
        token = mint_token(cluster, release)
        yield Identity(release, cluster.token_kubeconfig(token, name=release.name))
    finally:
        cluster.helm("uninstall", release.name, f"--namespace={namespace}")


def test_namespaced_install_reaches_only_the_watched_namespaces(
    cluster: Cluster, namespace: str
) -> None:
    with installed_watching_only(cluster, namespace) as identity:
        assert can_i(cluster, identity, "watch", f"backends.{GROUP}", f"--namespace={namespace}")
        assert not can_i(cluster, identity, "list", f"backends.{GROUP}", "--namespace=default")
        assert not can_i(cluster, identity, "list", f"backends.{GROUP}", "--all-namespaces")


def test_secrets_are_readable_by_get_only_in_the_watched_namespaces(
    cluster: Cluster, namespace: str
) -> None:
    with installed_watching_only(cluster, namespace) as identity:
        assert can_i(cluster, identity, "get", "secrets", f"--namespace={namespace}")
        assert not can_i(cluster, identity, "list", "secrets", f"--namespace={namespace}")
        assert not can_i(cluster, identity, "watch", "secrets", f"--namespace={namespace}")
        assert not can_i(cluster, identity, "get", "secrets", "--namespace=default")
        assert not can_i(cluster, identity, "get", "secrets", "--all-namespaces")
