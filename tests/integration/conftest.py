"""Fixtures shared by the integration tests that need our CRDs and inference stand-ins."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from nexus_crds import install_crds
from nexus_testkit.faultproxy import FaultProxy
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


@pytest.fixture
def proxy(cluster: Cluster) -> Iterator[FaultProxy]:
    """A fault-injecting TCP proxy in front of the API server (the ledger tests point the
    operator through it)."""
    server = urlsplit(cluster.server)
    faults = FaultProxy(server.hostname or "127.0.0.1", server.port or 443).start()
    yield faults
    faults.stop()
