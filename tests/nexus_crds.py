"""Install the checked-in CRDs into a test cluster (idempotent, safe to call per module)."""

from __future__ import annotations

from pathlib import Path

from nexus_operator.api import GROUP, VERSION, crdgen
from nexus_testkit.localcluster import Cluster

CRDS_DIR = Path(__file__).resolve().parents[1] / "crds"
PLURALS = {kind.kind: kind.plural for kind in crdgen.KINDS}
__all__ = ["CRDS_DIR", "GROUP", "PLURALS", "VERSION", "install_crds"]


def install_crds(cluster: Cluster) -> None:
    """Apply crds/ and wait until the API server serves both kinds."""
    cluster.kubectl("apply", "-f", str(CRDS_DIR))
    names = [f"crd/{kind.crd_name}" for kind in crdgen.KINDS]
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
