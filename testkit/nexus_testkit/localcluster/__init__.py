"""A real local Kubernetes control plane (etcd + kube-apiserver) for tests and `make run`.

Imported only by the cli layer and by tests; nothing in the operator depends on it.
"""

from nexus_testkit.localcluster.binaries import (
    BinariesMissingError,
    find_bin_dir,
    kubectl_path,
    repo_root,
)
from nexus_testkit.localcluster.clients import ClusterClients, ToolError
from nexus_testkit.localcluster.cluster import Cluster
from nexus_testkit.localcluster.controlplane import LocalControlPlane
from nexus_testkit.localcluster.kubeconfig import write_kubeconfig
from nexus_testkit.localcluster.pki import Pki, create_pki, issue_client_cert
from nexus_testkit.localcluster.process import tail
from nexus_testkit.localcluster.readiness import ComponentFailedError

__all__ = [
    "BinariesMissingError",
    "Cluster",
    "ClusterClients",
    "ComponentFailedError",
    "LocalControlPlane",
    "Pki",
    "ToolError",
    "create_pki",
    "find_bin_dir",
    "issue_client_cert",
    "kubectl_path",
    "repo_root",
    "tail",
    "write_kubeconfig",
]
