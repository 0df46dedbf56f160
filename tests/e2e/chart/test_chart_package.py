"""`make chart`, the release workflow's packaging step, with the real helm: the chart archive
carries the release version as both its version and appVersion, so its default image tag is
the image pushed for the same tag."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from nexus_testkit.localcluster import repo_root

pytestmark = pytest.mark.e2e


def test_make_chart_packages_the_chart_with_version_and_app_version(
    bin_dir: Path, tmp_path: Path
) -> None:
    subprocess.run(
        ["make", "--no-print-directory", "chart", "VERSION=1.2.3", f"DIST={tmp_path}",
         f"HELM={bin_dir / 'helm'}"],
        cwd=repo_root(), check=True, capture_output=True, text=True,
    )  # fmt: skip
    archive = tmp_path / "nexus-operator-1.2.3.tgz"
    with tarfile.open(archive) as tar:
        chart_yaml = tar.extractfile("nexus-operator/Chart.yaml")
        assert chart_yaml is not None
        chart = yaml.safe_load(chart_yaml.read())
        names = tar.getnames()
    assert (chart["version"], chart["appVersion"]) == ("1.2.3", "1.2.3")
    assert "nexus-operator/files/crds/backends.nexus.routing.dev.yaml" in names


def test_make_chart_refuses_to_package_without_a_version(bin_dir: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        ["make", "--no-print-directory", "chart", "VERSION=", f"DIST={tmp_path}",
         f"HELM={bin_dir / 'helm'}"],
        cwd=repo_root(), check=False, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode != 0
    assert "set VERSION" in result.stderr
    assert not list(tmp_path.iterdir())
