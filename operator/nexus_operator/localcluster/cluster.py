"""A running control plane together with the clients that talk to it.

This is the object tests receive from the `cluster` fixture and `make run` uses:
one place that knows the server URL, the CA, the logs and how to run kubectl/helm.
"""

from __future__ import annotations

from pathlib import Path

from nexus_operator.localcluster.clients import ClusterClients
from nexus_operator.localcluster.controlplane import LocalControlPlane
from nexus_operator.localcluster.kubeconfig import write_kubeconfig


class Cluster(ClusterClients):
    """Clients bound to `control_plane`'s admin kubeconfig, plus its server, CA and logs."""

    def __init__(self, control_plane: LocalControlPlane) -> None:
        super().__init__(
            kubeconfig=control_plane.kubeconfig,
            bin_dir=control_plane.bin_dir,
            state_dir=control_plane.workdir / "clients",
        )
        self.control_plane = control_plane

    @property
    def server(self) -> str:
        return self.control_plane.server

    @property
    def ca_cert(self) -> Path:
        return self.control_plane.pki.ca_cert

    @property
    def logs(self) -> dict[str, Path]:
        return self.control_plane.logs

    def token_kubeconfig(self, token: str, *, name: str, namespace: str = "default") -> Path:
        """A kubeconfig for another identity (e.g. a ServiceAccount token) on this server."""
        return write_kubeconfig(
            self.state_dir / f"{name}.kubeconfig",
            server=self.server,
            ca_pem=self.ca_cert.read_bytes(),
            token=token,
            namespace=namespace,
        )
