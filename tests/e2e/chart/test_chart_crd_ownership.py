"""`kubectl apply -f crds/` first, `helm install` second: both install paths work together.

The chart leaves CRDs that exist without this release's Helm ownership alone (instead of
failing the install on ownership), says so in NOTES with the adoption command, and after that
command `helm upgrade` manages them. Real helm against the real kube-apiserver.
"""

from __future__ import annotations

import shlex

import pytest
from chartkit import CHART, GENERATED_CRDS, documents, ensure_crds, generated_crd_names
from chartkit import release_name as new_release_name

from nexus_testkit.localcluster import Cluster

pytestmark = pytest.mark.e2e

OWNER_ANNOTATIONS = ("meta.helm.sh/release-name", "meta.helm.sh/release-namespace")


def installed_with_kubectl(cluster: Cluster) -> None:
    """The CRDs as `kubectl apply -f crds/` leaves them: present, owned by no Helm release."""
    ensure_crds(cluster)
    for name in generated_crd_names():
        cluster.kubectl(
            "annotate", f"crd/{name}", "--overwrite", *(f"{key}=" for key in OWNER_ANNOTATIONS)
        )
        cluster.kubectl("annotate", f"crd/{name}", *(f"{key}-" for key in OWNER_ANNOTATIONS))
        cluster.kubectl("label", f"crd/{name}", "--overwrite", "app.kubernetes.io/managed-by-")
    cluster.kubectl("apply", f"--filename={GENERATED_CRDS}")


def crd_kinds_in_release(cluster: Cluster, release: str, namespace: str) -> list[str]:
    manifest = cluster.helm("get", "manifest", release, f"--namespace={namespace}").stdout
    return sorted(
        doc["metadata"]["name"]
        for doc in documents(manifest)
        if doc["kind"] == "CustomResourceDefinition"
    )


def owner(cluster: Cluster, crd: str) -> tuple[str, str]:
    out = cluster.kubectl(
        "get", f"crd/{crd}", "-o",
        "jsonpath={.metadata.annotations.meta\\.helm\\.sh/release-name}"
        "/{.metadata.annotations.meta\\.helm\\.sh/release-namespace}",
    ).stdout  # fmt: skip
    release, _, namespace = out.partition("/")
    return release, namespace


def test_helm_install_after_kubectl_applied_crds_succeeds_and_adopts_them_on_request(
    cluster: Cluster, namespace: str
) -> None:
    installed_with_kubectl(cluster)
    release = new_release_name()
    crds = generated_crd_names()

    notes = cluster.helm("install", release, str(CHART), f"--namespace={namespace}").stdout

    assert crd_kinds_in_release(cluster, release, namespace) == []
    assert all(owner(cluster, crd) == ("", "") for crd in crds), "left as kubectl applied them"
    assert f"The CRDs {', '.join(crds)} already existed" in notes
    adoption = [
        line.strip() for line in notes.splitlines() if line.strip().startswith("kubectl ")
        and " crd " in line
    ]  # fmt: skip
    assert len(adoption) == 2, notes
    for command in adoption:
        cluster.kubectl(*shlex.split(command)[1:])

    cluster.helm("upgrade", release, str(CHART), f"--namespace={namespace}", "--reuse-values")

    assert crd_kinds_in_release(cluster, release, namespace) == crds
    assert all(owner(cluster, crd) == (release, namespace) for crd in crds)
    cluster.helm("uninstall", release, f"--namespace={namespace}")
    assert cluster.kubectl("get", *(f"crd/{crd}" for crd in crds), check=False).returncode == 0


def test_a_second_release_leaves_the_first_releases_crds_alone(
    cluster: Cluster, namespace: str
) -> None:
    installed_with_kubectl(cluster)
    first, second = new_release_name(), new_release_name()
    crds = generated_crd_names()
    for crd in crds:
        cluster.kubectl(
            "annotate", f"crd/{crd}", "--overwrite",
            f"meta.helm.sh/release-name={first}", f"meta.helm.sh/release-namespace={namespace}",
        )  # fmt: skip
        cluster.kubectl("label", f"crd/{crd}", "--overwrite", "app.kubernetes.io/managed-by=Helm")

    cluster.helm("install", second, str(CHART), f"--namespace={namespace}")

    assert crd_kinds_in_release(cluster, second, namespace) == []
    assert all(owner(cluster, crd) == (first, namespace) for crd in crds)
    cluster.helm("uninstall", second, f"--namespace={namespace}")
