"""The forge workflows (.github/workflows) are valid, reference only make targets and paths that
exist, and do what the release path promises: a multi-arch image pushed on a tag, the chart
packaged with the same version, and the suites run against a kind cluster with the image loaded.

No container runtime exists where these tests run, so the workflows themselves cannot run here;
this pins their structure so a rename of a target or a path breaks a test, not a release.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yaml"))
PATH_TOKEN = re.compile(r"(?<![\w/.~-])((?:\.ci|tools|charts|examples|crds|manifests)/[\w./*-]*)")


def load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), f"{path.name} is not a YAML mapping"
    # YAML 1.1 reads the bare key `on` as the boolean true.
    document["on"] = document.pop(True, document.get("on"))
    return document


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def run_scripts(workflow: dict[str, Any]) -> list[str]:
    return [step["run"] for step in steps(workflow) if "run" in step]


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-zA-Z0-9_-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))


def make_invocations(script: str) -> list[list[str]]:
    """Each `make ...` command line of a script: its targets (VAR=value arguments dropped)."""
    joined = script.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        for token in [*lexer, ";"]:
            if token in {"&&", "||", ";", "|", "&", "(", ")"}:
                words = [w for w in command if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", w)]
                if words[:1] == ["make"]:
                    found.append([w for w in words[1:] if not w.startswith("-")])
                command = []
            else:
                command.append(token)
    return found


def workflow(name: str) -> dict[str, Any]:
    return load(WORKFLOWS / name)


def test_ci_and_release_workflows_exist() -> None:
    assert {p.name for p in WORKFLOW_FILES} >= {"ci.yaml", "release.yaml"}


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_workflow_is_a_valid_workflow_document(path: Path) -> None:
    document = load(path)
    assert document["name"]
    assert document["on"], "no trigger"
    for job_id, job in document["jobs"].items():
        assert job.get("runs-on"), f"job {job_id} has no runs-on"
        assert job.get("steps"), f"job {job_id} has no steps"
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), f"{job_id}: a step needs uses or run"
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@v\d+(\.\d+)*", step["uses"]), step["uses"]
    text = path.read_text()
    assert text.count("${{") == text.count("}}"), "unbalanced ${{ }} expression"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_workflow_calls_only_existing_make_targets(path: Path) -> None:
    targets = make_targets()
    called = [
        target
        for script in run_scripts(load(path))
        for invocation in make_invocations(script)
        for target in invocation
    ]
    assert called, f"{path.name} calls no make target"
    assert set(called) <= targets, f"unknown make targets: {set(called) - targets}"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_workflow_references_only_existing_paths(path: Path) -> None:
    referenced = set(PATH_TOKEN.findall(path.read_text()))
    assert referenced
    missing = {ref for ref in referenced if not any(ROOT.glob(ref.rstrip("/")))}
    assert not missing, f"{path.name} references missing paths: {missing}"


def test_release_pushes_a_multi_arch_image_and_the_chart_with_the_tag_version() -> None:
    release = workflow("release.yaml")
    assert release["on"] == {"push": {"tags": ["v*"]}}
    assert release["permissions"]["packages"] == "write"
    scripts = "\n".join(run_scripts(release))
    image = next(s for s in run_scripts(release) if s.startswith("make image"))
    assert "PLATFORMS=linux/amd64,linux/arm64" in image
    assert "IMAGE_OUTPUT=--push" in image
    version = "${{ steps.meta.outputs.version }}"
    assert f":{version}" in image
    assert f'VERSION="{version}"' in scripts
    assert 'echo "version=${GITHUB_REF_NAME#v}"' in scripts
    assert "helm push" in scripts
    assert any(
        step.get("uses", "").startswith("docker/setup-qemu-action@") for step in steps(release)
    )


def test_ci_runs_the_suites_against_kind_with_the_image_loaded_and_the_chart_installed() -> None:
    ci = workflow("ci.yaml")
    kind = ci["jobs"]["kind"]
    uses = [step.get("uses", "") for step in kind["steps"]]
    assert any(u.startswith("helm/kind-action@") for u in uses)
    scripts = [step["run"] for step in kind["steps"] if "run" in step]
    order = [
        next(i for i, s in enumerate(scripts) if needle in s)
        for needle in ("make image", "kind load docker-image", "make deploy", "make helm-test",
                       "NEXUS_E2E_KUBECONFIG=")
    ]  # fmt: skip
    assert order == sorted(order), "build, load, install, helm test, then the suites"
    suites = next(s for s in scripts if "NEXUS_E2E_KUBECONFIG=" in s)
    assert make_invocations(suites) == [["test-integration", "test-e2e"]]
    deploy = next(s for s in scripts if "make deploy" in s)
    assert "image.pullPolicy=Never" in deploy
    assert "watchNamespaces=" in deploy, "the installed operator must not touch test namespaces"
    test_job = ci["jobs"]["test"]
    assert {"make lint", ".ci/run"} <= {s.get("run") for s in test_job["steps"]}
