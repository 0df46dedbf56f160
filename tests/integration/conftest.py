"""Fixtures shared by the integration tests that need our CRDs and inference stand-ins."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nexus_crds import install_crds
from nexus_testkit.localcluster import Cluster
from nexus_testkit.localcluster.standins import StandIns


@pytest.fixture(scope="session")
def nexus_crds(cluster: Cluster) -> None:
    """The generated Backend and RoutingPolicy CRDs, installed once and serving."""
    install_crds(cluster)


@pytest.fixture
def standins() -> Iterator[StandIns]:
    servers = StandIns()
    yield servers
    servers.close()
