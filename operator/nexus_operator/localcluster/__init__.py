"""A real local Kubernetes control plane (etcd + kube-apiserver) for tests and `make run`.

Imported only by the cli layer and by tests; nothing in the operator depends on it.
"""

from nexus_operator.localcluster.binaries import (
    BinariesMissingError,
    find_bin_dir,
    kubectl_path,
    repo_root,
)
from nexus_operator.localcluster.clients import ClusterClients, ToolError
from nexus_operator.localcluster.cluster import Cluster
from nexus_operator.localcluster.controlplane import LocalControlPlane
from nexus_operator.localcluster.kubeconfig import write_kubeconfig
from nexus_operator.localcluster.pki import Pki, create_pki, issue_client_cert
from nexus_operator.localcluster.process import tail
from nexus_operator.localcluster.readiness import ComponentFailedError

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
