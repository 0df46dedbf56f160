"""The chart against the real kube-apiserver: server-side validation, install, upgrade, uninstall,
and Pod Security "restricted" admission of the pods it would run.

There is no kubelet here, so installs run without --wait and hook pods never run; objects and
admission decisions are real.
"""

from __future__ import annotations

import copy
import json
import textwrap

import pytest
import yaml
from chartkit import (
    CHART,
    EVERYTHING_ON,
    HelmTemplate,
    Manifest,
    adopt_crds,
    documents,
    generated_crd_names,
    of_kind,
    one,
    release_name,
)

from nexus_testkit.localcluster import Cluster

pytestmark = pytest.mark.e2e


def label_restricted(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl(
        "label", f"namespace/{namespace}", "--overwrite",
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )  # fmt: skip


def test_rendered_chart_passes_server_side_dry_run_without_pod_security_warnings(
    cluster: Cluster, namespace: str, helm_template: HelmTemplate
) -> None:
    label_restricted(cluster, namespace)
    manifests = helm_template(*EVERYTHING_ON, release=release_name(), namespace=namespace)
    stream = yaml.safe_dump_all(manifests)
    result = cluster.kubectl("apply", "--dry-run=server", "--filename=-", stdin=stream)
    applied = [line for line in result.stdout.splitlines() if "(server dry run)" in line]
    assert len(applied) == len(manifests)
    assert "PodSecurity" not in result.stderr


def existing(cluster: Cluster, *refs: str, namespace: str | None = None) -> set[str]:
    """Which of `refs` (kind/name) exist right now."""
    scope = [f"--namespace={namespace}"] if namespace else []
    found = set()
    for ref in refs:
        if cluster.kubectl("get", ref, *scope, check=False).returncode == 0:
            found.add(ref)
    return found


def test_install_upgrade_and_uninstall_keep_the_crds(cluster: Cluster, namespace: str) -> None:
    release = release_name()
    full = f"{release}-nexus-operator"
    adopt_crds(cluster, release=release, namespace=namespace)
    installed = cluster.helm("install", release, str(CHART), f"--namespace={namespace}")
    assert_notes_example_is_accepted(cluster, installed.stdout, namespace=namespace)

    namespaced = (
        f"serviceaccount/{full}", f"deployment/{full}", f"service/{full}",
        f"role/{full}-leader-election", f"rolebinding/{full}-leader-election",
    )  # fmt: skip
    cluster_scoped = (f"clusterrole/{full}", f"clusterrolebinding/{full}")
    crds = tuple(f"crd/{name}" for name in generated_crd_names())
    assert existing(cluster, *namespaced, namespace=namespace) == set(namespaced)
    assert existing(cluster, *cluster_scoped, *crds) == {*cluster_scoped, *crds}

    cluster.helm(
        "upgrade", release, str(CHART), f"--namespace={namespace}",
        "--set=replicaCount=2", "--set=podDisruptionBudget.enabled=true",
        "--set=networkPolicy.enabled=true", f"--set=watchNamespaces={{{namespace}}}",
    )  # fmt: skip
    deployment = json.loads(
        cluster.kubectl("get", f"deployment/{full}", f"--namespace={namespace}", "-o=json").stdout
    )
    assert deployment["spec"]["replicas"] == 2
    assert (
        f"--namespace={namespace}"
        in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    upgraded = (f"poddisruptionbudget/{full}", f"networkpolicy/{full}", f"rolebinding/{full}")
    assert existing(cluster, *upgraded, namespace=namespace) == set(upgraded)
    assert existing(cluster, f"clusterrolebinding/{full}") == set(), "now bound per namespace"
    history = json.loads(
        cluster.helm("history", release, f"--namespace={namespace}", "-o=json").stdout
    )
    assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"), (2, "deployed")]

    cluster.helm("uninstall", release, f"--namespace={namespace}")
    assert existing(cluster, *namespaced, *upgraded, namespace=namespace) == set()
    assert existing(cluster, *cluster_scoped) == set()
    assert existing(cluster, *crds) == set(crds), "crds.keep leaves the CRDs (and every CR)"


def assert_notes_example_is_accepted(cluster: Cluster, output: str, *, namespace: str) -> None:
    """The Backend and RoutingPolicy NOTES.txt tells users to apply pass the real CRD schema."""
    heredoc = output.split("<<'YAML'\n", 1)[1].split("\n     YAML\n", 1)[0]
    example = textwrap.dedent(heredoc)
    assert {doc["kind"] for doc in documents(example)} == {"Backend", "RoutingPolicy"}
    cluster.kubectl(
        "apply", "--dry-run=server", f"--namespace={namespace}", "--filename=-", stdin=example
    )


def pod_from_template(deployment: Manifest, *, name: str) -> Manifest:
    """A bare Pod with the Deployment's pod template, as the ReplicaSet controller would create."""
    template = copy.deepcopy(deployment["spec"]["template"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }


def create_pod(cluster: Cluster, namespace: str, pod: Manifest) -> tuple[int, str]:
    result = cluster.kubectl(
        "create", f"--namespace={namespace}", "--filename=-", stdin=json.dumps(pod), check=False
    )
    return result.returncode, result.stdout + result.stderr


def test_chart_pods_are_admitted_under_restricted_pod_security(
    cluster: Cluster, namespace: str, helm_template: HelmTemplate
) -> None:
    label_restricted(cluster, namespace)
    manifests = helm_template(release=release_name(), namespace=namespace)
    operator = pod_from_template(one(manifests, "Deployment"), name="operator")
    helm_test_pod = one(of_kind(manifests, "Pod"), "Pod")
    helm_test_pod["metadata"].pop("annotations")
    for pod in (operator, helm_test_pod):
        code, output = create_pod(cluster, namespace, pod)
        assert code == 0, output
        assert "created" in output


@pytest.mark.parametrize(
    ("path", "value", "violation"),
    [
        (("securityContext", "runAsNonRoot"), False, "runAsNonRoot != true"),
        (("containers", 0, "securityContext", "allowPrivilegeEscalation"), True, "allowPrivilegeEscalation != false"),
        (("containers", 0, "securityContext", "capabilities"), {"add": ["NET_ADMIN"]}, "unrestricted capabilities"),
        (("securityContext", "seccompProfile"), {"type": "Unconfined"}, "seccompProfile"),
    ],
    ids=["root-allowed", "privilege-escalation", "capabilities-kept", "seccomp-unconfined"],
)  # fmt: skip
def test_weakened_pod_template_is_rejected_by_restricted_pod_security(
    cluster: Cluster,
    namespace: str,
    helm_template: HelmTemplate,
    path: tuple[str | int, ...],
    value: object,
    violation: str,
) -> None:
    label_restricted(cluster, namespace)
    pod = pod_from_template(one(helm_template(namespace=namespace), "Deployment"), name="weakened")
    target = pod["spec"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    code, output = create_pod(cluster, namespace, pod)
    assert code != 0
    assert "violates PodSecurity" in output
    assert violation in output
