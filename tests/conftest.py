"""Shared fixtures: one real control plane per test session, one namespace per test.

`cluster` starts etcd + kube-apiserver from the binaries tools/build.sh caches (or
fails loudly with the build command: integration tests are never skipped), points
KUBECONFIG at it for subprocesses, and attaches the component log tails to every
failing test that used it.

With NEXUS_E2E_KUBECONFIG set, `cluster` is that cluster instead (kind, k3d, a cloud
cluster): nothing is started, and only the tests that need the local processes (stopping
the API server, the pinned build's version; fixture `local_control_plane`) are skipped.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from nexus_testkit.localcluster import (
    BinariesMissingError,
    Cluster,
    ComponentFailedError,
    LocalControlPlane,
    find_bin_dir,
    tail,
)

LOG_TAIL_LINES = 60
EXTERNAL_KUBECONFIG = "NEXUS_E2E_KUBECONFIG"
_PLANE = pytest.StashKey[LocalControlPlane]()
_TIMINGS = pytest.StashKey[dict[str, float]]()


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    """The cached Go-built binaries (kube-apiserver, etcd, helm, grpcurl, ghz)."""
    try:
        return find_bin_dir()
    except BinariesMissingError as exc:
        raise pytest.fail.Exception(str(exc), pytrace=False) from None


@pytest.fixture(scope="session")
def cluster(
    bin_dir: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    """A real etcd + kube-apiserver for the whole session; KUBECONFIG points at it."""
    external = os.environ.get(EXTERNAL_KUBECONFIG)
    if external:
        yield from _external_cluster(Path(external), bin_dir, tmp_path_factory)
        return
    workdir = tmp_path_factory.mktemp("controlplane")
    plane = LocalControlPlane(bin_dir, workdir)
    try:
        plane.start()
    except ComponentFailedError as exc:
        message = f"local control plane did not start: {exc}"
        raise pytest.fail.Exception(message, pytrace=False) from None
    request.config.stash[_PLANE] = plane
    request.config.stash[_TIMINGS] = dict(plane.timings)
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(plane.kubeconfig)
    try:
        yield Cluster.local(plane)
    finally:
        _restore_env("KUBECONFIG", previous)
        del request.config.stash[_PLANE]
        plane.stop()


def _external_cluster(
    kubeconfig: Path, bin_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(kubeconfig)
    try:
        state_dir = tmp_path_factory.mktemp("clients")
        yield Cluster.external(kubeconfig, bin_dir=bin_dir, state_dir=state_dir)
    finally:
        _restore_env("KUBECONFIG", previous)


@pytest.fixture
def local_control_plane(cluster: Cluster) -> LocalControlPlane:
    """The local control plane's processes: for tests that stop and restart the API server or
    check the pinned build, which a cluster given by NEXUS_E2E_KUBECONFIG does not offer."""
    if cluster.control_plane is None:
        pytest.skip(f"needs the local control plane; {EXTERNAL_KUBECONFIG} points elsewhere")
    return cluster.control_plane


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test; deleted afterwards (it stays Terminating,
    as there is no controller-manager to empty it, but admits nothing new)."""
    name = namespace_name(request.node.name)
    body = client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
    with cluster.api_client() as api:
        client.CoreV1Api(api).create_namespace(body)
    yield name
    with cluster.api_client() as api:
        try:
            client.CoreV1Api(api).delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


def namespace_name(test_name: str) -> str:
    """A DNS-label namespace name from a test name, unique per call."""
    stem = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")[:40].rstrip("-")
    return f"t-{stem}-{secrets.token_hex(3)}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the Go-built binaries, so `-m "not integration"` runs fast."""
    for item in items:
        needs_binaries = "bin_dir" in getattr(item, "fixturenames", ())
        marked = any(item.iter_markers("integration")) or any(item.iter_markers("e2e"))
        if needs_binaries and not marked:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the tail of each component log to a failing test that used the cluster."""
    report: pytest.TestReport = yield
    plane = item.config.stash.get(_PLANE, None)
    if report.failed and plane is not None and "cluster" in getattr(item, "fixturenames", ()):
        for name, path in plane.logs.items():
            title = f"{name} log, last {LOG_TAIL_LINES} lines of {path}"
            report.sections.append((title, tail(path, lines=LOG_TAIL_LINES)))
    return report


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Report how long the control plane took to start, when one was started."""
    timings = config.stash.get(_TIMINGS, None)
    if timings is None:
        return
    parts = ", ".join(
        f"{name} {seconds:.2f}s" for name, seconds in timings.items() if name != "total"
    )
    terminalreporter.write_line(f"local control plane started in {timings['total']:.2f}s ({parts})")


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
