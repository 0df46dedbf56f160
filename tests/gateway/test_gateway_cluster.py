"""The gateway with `nexus-operator run` against the real API server: spend taken from real
responses through Envoy lands in the RoutingPolicy's status (SoftLimit, then HardLimit), the
next request is refused with the reason, and the Backend's health comes from real probes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from nexus_crds import install_crds
from nexus_testkit.localcluster import Cluster
from nexus_testkit.localcluster.standins import NAME_HEADER, StandIns

from .conftest import (
    HELLO,
    Gateway,
    priced_and_budgeted,
    refused_for_the_budget,
    run_gateway,
    run_in_cluster,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

WAIT_S = 45.0


def policy_status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "rp", name, "-n", namespace, "-o", "json").stdout
    status: dict[str, Any] = json.loads(out).get("status") or {}
    return status


def wait_for_budget(cluster: Cluster, namespace: str, *, state: str, spent: float) -> None:
    deadline = time.monotonic() + WAIT_S
    budget: dict[str, Any] = {}
    while time.monotonic() < deadline:
        budget = policy_status(cluster, namespace, "budgeted").get("budget") or {}
        if budget.get("state") == state and abs(budget.get("spentUsd", -1) - spent) < 0.01:
            return
        time.sleep(0.3)
    pytest.fail(f"status.budget stayed {budget}, wanted {state} at {spent} USD")


def first_success(gateway: Gateway) -> Any:
    """Poll until the operator has synced and probed the stand-in Healthy."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            return gateway.client().chat.completions.with_raw_response.create(
                model="priced-model", messages=HELLO
            )
        except openai.APIStatusError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_spend_through_the_gateway_moves_the_policy_status_and_then_refuses(
    cluster: Cluster, namespace: str, stand_ins: StandIns, tmp_path: Path
) -> None:
    install_crds(cluster)
    server = stand_ins.start("openai", ("priced-model",), name="priced-in-cluster")
    documents = priced_and_budgeted(
        server, namespace=namespace, healthCheck={"intervalSeconds": 2, "timeoutSeconds": 1}
    )
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(documents))
    command = run_in_cluster(cluster, namespace, "--flush-interval=0.5")
    with run_gateway(tmp_path, [], picker_command=command) as gateway:
        raw = first_success(gateway)
        assert raw.headers[NAME_HEADER] == "priced-in-cluster"
        assert raw.headers["x-nexus-backend"] == f"{namespace}/priced"
        wait_for_budget(cluster, namespace, state="Normal", spent=1.0)
        stream = gateway.client().chat.completions.create(
            model="priced-model",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
        assert [chunk for chunk in stream if chunk.usage is not None]
        wait_for_budget(cluster, namespace, state="SoftLimit", spent=2.0)
        gateway.client().chat.completions.create(model="priced-model", messages=HELLO)
        wait_for_budget(cluster, namespace, state="HardLimit", spent=3.0)
        refused_for_the_budget(gateway, server)
    health = json.loads(
        cluster.kubectl("get", "be", "priced", "-n", namespace, "-o", "json").stdout
    )["status"]["health"]
    assert health["state"] == "Healthy"
