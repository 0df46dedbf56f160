"""Fixtures for the Helm chart tests (helpers live in chartkit.py)."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from chartkit import CHART, HelmTemplate, Manifest, documents

from nexus_testkit.localcluster import Cluster


@pytest.fixture(scope="session")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Isolated helm config/cache/data homes, so no user repositories or plugins leak in."""
    home = tmp_path_factory.mktemp("helm-home")
    return {f"HELM_{k}_HOME": str(home / k.lower()) for k in ("CONFIG", "CACHE", "DATA")}


@pytest.fixture(scope="session")
def run_helm(
    bin_dir: Path, helm_home: dict[str, str]
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the pinned helm offline (lint, template); never raises, callers check the result."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/bin:/bin", **helm_home}
        return subprocess.run(
            [str(bin_dir / "helm"), *args], capture_output=True, text=True, env=env, check=False
        )

    return run


@pytest.fixture(scope="session")
def helm_template(run_helm: Callable[..., subprocess.CompletedProcess[str]]) -> HelmTemplate:
    """`helm template <release> charts/nexus-operator <args>` parsed into manifests."""

    def render(
        *args: str, release: str = "nexus", namespace: str = "nexus-system"
    ) -> list[Manifest]:
        result = run_helm("template", release, str(CHART), f"--namespace={namespace}", *args)
        assert result.returncode == 0, result.stderr
        return documents(result.stdout)

    return render


@pytest.fixture(scope="module")
def module_namespace(cluster: Cluster) -> Iterator[str]:
    """One namespace for a module's shared release (deleted afterwards)."""
    name = f"t-chart-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def render_notes(
    run_helm: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., str]:
    """NOTES.txt as `helm install` would print it, offline: a copy of the chart renders it into a
    ConfigMap (helm template never prints NOTES, and helm install needs a cluster)."""
    chart = tmp_path_factory.mktemp("notes") / "nexus-operator"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "_notes_probe.tpl").write_text(
        '{{- define "notes-probe" -}}\n' + notes + "{{- end }}\n"
    )
    (chart / "templates" / "notes-probe.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ include "notes-probe" . | toJson }}\n'
    )

    def render(*args: str) -> str:
        result = run_helm(
            "template",
            "nexus",
            str(chart),
            "--namespace=nexus-system",
            "--show-only=templates/notes-probe.yaml",
            *args,
        )
        assert result.returncode == 0, result.stderr
        return str(documents(result.stdout)[0]["data"]["notes"])

    return render
