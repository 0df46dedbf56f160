"""A running control plane together with the clients that talk to it.

This is the object tests receive from the `cluster` fixture and `make run` uses:
one place that knows the server URL, the CA, the logs and how to run kubectl/helm.
It wraps either the local control plane this package starts, or — for running the same
tests against a real cluster (kind, k3d, a cloud cluster) — any kubeconfig.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from nexus_testkit.localcluster.clients import ClusterClients
from nexus_testkit.localcluster.controlplane import LocalControlPlane
from nexus_testkit.localcluster.kubeconfig import write_kubeconfig


class Cluster(ClusterClients):
    """Clients bound to an admin kubeconfig, plus the server, its CA and (when local) logs."""

    def __init__(
        self,
        *,
        kubeconfig: Path,
        bin_dir: Path,
        state_dir: Path,
        server: str,
        ca_pem: bytes,
        control_plane: LocalControlPlane | None = None,
    ) -> None:
        super().__init__(kubeconfig=kubeconfig, bin_dir=bin_dir, state_dir=state_dir)
        self.server = server
        self.ca_pem = ca_pem
        self.control_plane = control_plane

    @classmethod
    def local(cls, control_plane: LocalControlPlane) -> Cluster:
        """The control plane this package started (its processes, logs and PKI are ours)."""
        return cls(
            kubeconfig=control_plane.kubeconfig,
            bin_dir=control_plane.bin_dir,
            state_dir=control_plane.workdir / "clients",
            server=control_plane.server,
            ca_pem=control_plane.pki.ca_cert.read_bytes(),
            control_plane=control_plane,
        )

    @classmethod
    def external(cls, kubeconfig: Path, *, bin_dir: Path, state_dir: Path) -> Cluster:
        """Any cluster, from its kubeconfig's current context (nothing to start or stop)."""
        server, ca_pem = _current_cluster(kubeconfig)
        return cls(
            kubeconfig=kubeconfig,
            bin_dir=bin_dir,
            state_dir=state_dir,
            server=server,
            ca_pem=ca_pem,
        )

    @property
    def logs(self) -> dict[str, Path]:
        return self.control_plane.logs if self.control_plane is not None else {}

    def token_kubeconfig(self, token: str, *, name: str, namespace: str = "default") -> Path:
        """A kubeconfig for another identity (e.g. a ServiceAccount token) on this server."""
        return write_kubeconfig(
            self.state_dir / f"{name}.kubeconfig",
            server=self.server,
            ca_pem=self.ca_pem,
            token=token,
            namespace=namespace,
        )


def _current_cluster(kubeconfig: Path) -> tuple[str, bytes]:
    """Server URL and CA bundle of the kubeconfig's current context."""
    config: dict[str, Any] = yaml.safe_load(kubeconfig.read_text())
    contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
    clusters = {c["name"]: c["cluster"] for c in config.get("clusters") or []}
    current = config.get("current-context")
    if current not in contexts:
        raise ValueError(f"{kubeconfig}: current-context {current!r} is not among its contexts")
    entry = clusters[contexts[current]["cluster"]]
    if "certificate-authority-data" in entry:
        ca_pem = base64.b64decode(entry["certificate-authority-data"])
    elif "certificate-authority" in entry:
        path = Path(entry["certificate-authority"])
        ca_pem = (path if path.is_absolute() else kubeconfig.parent / path).read_bytes()
    else:
        raise ValueError(f"{kubeconfig}: the current cluster has no certificate authority")
    return str(entry["server"]), ca_pem
