"""The operator runs with nothing but the chart's RBAC: the installed Deployment's own arguments,
a TokenRequest token for the chart's ServiceAccount, against the real API server. It must sync
its registry (gRPC health SERVING), win its Lease and write a Backend's status, with no 403."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from chartkit import SIDECAR_VALUES, Release, ensure_crds, install, mint_token
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nexus_testkit.localcluster import Cluster
from nexus_testkit.localcluster.standins import InferenceStandIn

pytestmark = pytest.mark.e2e

DEADLINE_S = 90.0
MODEL = "llama3.2"
# A refusal by the API server anywhere in the log; the lookbehind skips ",403" milliseconds.
REFUSED = re.compile(r"(?<![,.:\d])\b403\b|forbidden", re.IGNORECASE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chart_args(cluster: Cluster, release: Release) -> list[str]:
    """The installed Deployment's container args, with listen addresses moved to loopback ports
    (the pod network is this machine)."""
    deployment = json.loads(
        cluster.kubectl(
            "get",
            f"deployment/{release.service_account}",
            f"--namespace={release.namespace}",
            "-o=json",
        ).stdout
    )
    local = {
        "--grpc-address": f"127.0.0.1:{free_port()}",
        "--metrics-port": str(free_port()),
        "--health-port": str(free_port()),
        # each pod has its own spool emptyDir (and with it its own replica identity)
        "--spool-dir": tempfile.mkdtemp(prefix="nexus-spool-"),
    }
    args = []
    for arg in deployment["spec"]["template"]["spec"]["containers"][0]["args"]:
        flag = arg.split("=", 1)[0]
        args.append(f"{flag}={local[flag]}" if flag in local else arg)
    if not any(a.startswith("--extproc-address") for a in args):
        args.append(f"--extproc-address=127.0.0.1:{free_port()}")
    return args


def log_tail(log: Path) -> str:
    return log.read_text()[-4000:]


def refusals(log: Path) -> list[str]:
    """Every line of the whole log in which the API server refused a request."""
    return [line for line in log.read_text().splitlines() if REFUSED.search(line)]


async def eventually(
    probe: Callable[[], Awaitable[Any]],
    *,
    what: str,
    process: asyncio.subprocess.Process,
    log: Path,
) -> Any:
    """Poll `probe` until it returns a truthy value; fail with the operator log if it never does."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        assert process.returncode is None, f"operator exited early:\n{log_tail(log)}"
        value = await probe()
        if value:
            return value
        await asyncio.sleep(0.5)
    pytest.fail(f"{what} not reached in {DEADLINE_S:.0f}s; operator log:\n{log_tail(log)}")


async def grpc_serving(address: str) -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2
            )
        except grpc.aio.AioRpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def backend_manifest(url: str) -> dict[str, Any]:
    return {
        "apiVersion": "nexus.routing.dev/v1alpha1",
        "kind": "Backend",
        "metadata": {"name": "standin"},
        "spec": {
            "type": "ollama",
            "url": url,
            "models": [{"id": MODEL, "contextLength": 8192}],
            "healthCheck": {"intervalSeconds": 1, "timeoutSeconds": 1},
        },
    }


@pytest.fixture
async def standin() -> AsyncIterator[InferenceStandIn]:
    server = InferenceStandIn(flavour="ollama", models=[MODEL])
    await server.start()
    yield server
    await server.stop()


@dataclass
class RunningOperator:
    process: asyncio.subprocess.Process
    log: Path
    grpc_address: str

    async def until(self, probe: Callable[[], Awaitable[Any]], *, what: str) -> Any:
        return await eventually(probe, what=what, process=self.process, log=self.log)


@asynccontextmanager
async def operator_as_chart(
    cluster: Cluster, release: Release, *, log: Path
) -> AsyncIterator[RunningOperator]:
    """`nexus-operator run` with the installed Deployment's args and a kubeconfig holding only a
    TokenRequest token of the chart's ServiceAccount; asserts on exit that nothing was refused."""
    kubeconfig = cluster.token_kubeconfig(
        mint_token(cluster, release), name=release.name, namespace=release.namespace
    )
    args = chart_args(cluster, release)
    grpc_address = next(a.split("=", 1)[1] for a in args if a.startswith("--grpc-address="))
    env = {**os.environ, "POD_NAMESPACE": release.namespace, "KUBECONFIG": str(kubeconfig)}
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nexus_operator.cli.operator_main", *args, f"--kubeconfig={kubeconfig}",
            stdout=sink, stderr=asyncio.subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        running = RunningOperator(process, log, grpc_address)
        await running.until(lambda: grpc_serving(grpc_address), what="gRPC health SERVING")
        yield running
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=30)
            except TimeoutError:
                process.kill()
                await process.wait()
    refused = refusals(log)
    assert refused == [], "\n".join(refused)


async def kubectl_out(cluster: Cluster, *args: str) -> str:
    """kubectl off the event loop (the stand-in answering probes lives on this loop)."""
    result = await asyncio.to_thread(cluster.kubectl, *args, check=False)
    return result.stdout


async def test_operator_with_the_chart_service_account_token_syncs_and_writes_status(
    cluster: Cluster, namespace: str, standin: InferenceStandIn, tmp_path: Path
) -> None:
    ensure_crds(cluster)
    release = install(
        cluster, namespace=namespace, args=(f"--set=watchNamespaces={{{namespace}}}",)
    )
    manifest = json.dumps(backend_manifest(standin.url))
    cluster.kubectl("apply", f"--namespace={namespace}", "--filename=-", stdin=manifest)
    ns = f"--namespace={namespace}"
    async with operator_as_chart(cluster, release, log=tmp_path / "operator.log") as operator:

        async def backend_healthy() -> bool:
            state = await kubectl_out(
                cluster, "get", "backend/standin", ns, "-o=jsonpath={.status.health.state}"
            )
            return state == "Healthy"

        async def lease_holder() -> str:
            lease = f"lease/{release.service_account}"
            return await kubectl_out(
                cluster, "get", lease, ns, "-o=jsonpath={.spec.holderIdentity}"
            )

        await operator.until(backend_healthy, what="Backend status Healthy")
        holder = await operator.until(lease_holder, what="Lease held")
        assert holder.startswith(f"{socket.gethostname()}-{operator.process.pid}-")


async def test_router_role_serves_with_the_sidecar_rbac_and_takes_no_lease(
    cluster: Cluster, namespace: str, standin: InferenceStandIn, tmp_path: Path
) -> None:
    ensure_crds(cluster)
    values = (f"--values={SIDECAR_VALUES}", f"--set=watchNamespaces={{{namespace}}}")
    release = install(cluster, namespace=namespace, args=values)
    manifest = json.dumps(backend_manifest(standin.url))
    cluster.kubectl("apply", f"--namespace={namespace}", "--filename=-", stdin=manifest)
    async with operator_as_chart(cluster, release, log=tmp_path / "router.log") as router:
        await router.until(lambda: standin_probed(standin), what="stand-in probed by the router")
    leases = await kubectl_out(cluster, "get", "leases", f"--namespace={namespace}", "-o=name")
    assert leases == ""


async def standin_probed(standin: InferenceStandIn) -> bool:
    return standin.behaviour.requests > 0


async def test_operator_with_the_chart_rbac_reads_the_secret_a_backend_names(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """The per-namespace Secret Role is enough: the credential is read (no 403 in the log) and
    sent on probes to a stand-in that answers only to it."""
    key = "sk-chart-rbac-0123"
    keyed = InferenceStandIn(flavour="openai", models=[MODEL])
    keyed.behaviour.required_headers = {"authorization": f"Bearer {key}"}
    await keyed.start()
    try:
        ensure_crds(cluster)
        release = install(
            cluster, namespace=namespace, args=(f"--set=watchNamespaces={{{namespace}}}",)
        )
        ns = f"--namespace={namespace}"
        cluster.kubectl(
            "create", "secret", "generic", "llm-key", f"--from-literal=api-key={key}", ns
        )
        manifest = backend_manifest(keyed.url)
        manifest["spec"] |= {
            "type": "vllm",
            "credentialsSecretRef": {"name": "llm-key", "key": "api-key"},
        }
        cluster.kubectl("apply", ns, "--filename=-", stdin=json.dumps(manifest))
        async with operator_as_chart(cluster, release, log=tmp_path / "operator.log") as operator:

            async def credentials_and_health() -> bool:
                status = await kubectl_out(
                    cluster, "get", "backend/standin", ns, "-o=jsonpath={.status}"
                )
                if not status:
                    return False
                parsed = json.loads(status)
                ready = {c["type"]: c["status"] for c in parsed.get("conditions", [])}
                healthy = parsed.get("health", {}).get("state") == "Healthy"
                return ready.get("CredentialsReady") == "True" and healthy

            await operator.until(credentials_and_health, what="CredentialsReady and Healthy")
        assert key not in (tmp_path / "operator.log").read_text()
    finally:
        await keyed.stop()
