"""The kubeconfig every client reads: the Python client, kopf, kubectl and helm.

Only fields all four parsers understand are used (kopf's fallback parser reads
server, certificate-authority-data, token, client-certificate/key and
current-context), so the same file works on every path.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

CONTEXT = "nexus-local"


def kubeconfig_document(
    *, server: str, ca_pem: bytes, token: str, namespace: str
) -> dict[str, Any]:
    """A single-context kubeconfig authenticating with a bearer token."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode("ascii"),
                },
            }
        ],
        "users": [{"name": CONTEXT, "user": {"token": token}}],
        "contexts": [
            {
                "name": CONTEXT,
                "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace},
            }
        ],
        "current-context": CONTEXT,
    }


def write_kubeconfig(
    path: Path, *, server: str, ca_pem: bytes, token: str, namespace: str = "default"
) -> Path:
    """Write a kubeconfig readable only by its owner (it holds a bearer token)."""
    document = kubeconfig_document(server=server, ca_pem=ca_pem, token=token, namespace=namespace)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    path.chmod(0o600)
    return path
