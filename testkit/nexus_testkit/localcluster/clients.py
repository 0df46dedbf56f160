"""The real clients (Python client, kubectl, helm) bound to one kubeconfig."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from kubernetes import client, config

from nexus_testkit.localcluster.binaries import kubectl_path


class ToolError(subprocess.CalledProcessError):
    """A CLI tool exited non-zero; unlike its base class, str() includes stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


class ClusterClients:
    """Runs kubectl/helm and builds API clients against `kubeconfig`.

    helm's config, cache and data homes live in `state_dir`, so tests never read
    or write the user's repositories and plugins.
    """

    def __init__(self, *, kubeconfig: Path, bin_dir: Path, state_dir: Path) -> None:
        self.kubeconfig = kubeconfig
        self.bin_dir = bin_dir
        self.state_dir = state_dir

    def api_client(self, kubeconfig: Path | None = None) -> client.ApiClient:
        """A fresh ApiClient (for `kubeconfig`, default ours); close it when done."""
        return config.new_client_from_config(config_file=str(kubeconfig or self.kubeconfig))

    def kubectl(
        self, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl; raises ToolError on a non-zero exit when `check`."""
        argv = [str(kubectl_path()), f"--kubeconfig={self.kubeconfig}", *args]
        return _run(argv, check=check, stdin=stdin, timeout=timeout, env=None)

    def helm(
        self, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 300.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the cached helm binary; raises ToolError on a non-zero exit when `check`."""
        argv = [str(self.bin_dir / "helm"), f"--kubeconfig={self.kubeconfig}", *args]
        return _run(argv, check=check, stdin=stdin, timeout=timeout, env=self._helm_env())

    def _helm_env(self) -> dict[str, str]:
        homes = {
            f"HELM_{kind}_HOME": str(self.state_dir / "helm" / kind.lower())
            for kind in ("CONFIG", "CACHE", "DATA")
        }
        return {**os.environ, **homes}


def _run(
    argv: list[str],
    *,
    check: bool,
    stdin: str | None,
    timeout: float,
    env: dict[str, str] | None,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if check and result.returncode != 0:
        raise ToolError(result.returncode, argv, output=result.stdout, stderr=result.stderr)
    return result
