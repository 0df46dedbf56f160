"""`nexus-operator run --workers 2` against the real API server: the guarantees of one process.

The operator runs as a real subprocess; clients open many connections, which SO_REUSEPORT
spreads over the two workers.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from operator_support import Objects, backend_spec, wait_for

from nexus_operator.serving.proto import router_pb2 as pb
from nexus_operator.serving.proto import router_pb2_grpc
from nexus_testkit.localcluster import Cluster

pytestmark = [pytest.mark.timeout(600), pytest.mark.usefixtures("nexus_crds")]

CONNECTIONS = 16  # each on its own TCP connection: both workers get some (all on one: 2^-15)
MODEL = "llama3:8b"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _operator(cluster: Cluster, namespace: str, *extra: str) -> Iterator[str]:
    """`run --workers 2` on a free port; yields its address once gRPC health is SERVING."""
    address = f"127.0.0.1:{_free_port()}"
    argv = [sys.executable, "-m", "nexus_operator.cli.operator_main", "run"]
    argv += ["--kubeconfig", str(cluster.kubeconfig), "--grpc-address", address]
    argv += ["--metrics-port", "-1", "--health-port", str(_free_port())]
    argv += ["--namespace", namespace, "--lease-namespace", namespace, "--log-level", "WARNING"]
    argv += [
        "--workers",
        "2",
        "--flush-interval",
        "0.5",
        "--extproc-address",
        "127.0.0.1:0",
        *extra,
    ]
    process = subprocess.Popen(argv)
    try:
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            wait_for(lambda: _serving(health), timeout=120)
        yield address
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _serving(health: health_pb2_grpc.HealthStub) -> bool:
    try:
        reply = health.Check(health_pb2.HealthCheckRequest(), timeout=2)
    except grpc.RpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@contextmanager
def _stubs(address: str) -> Iterator[list[router_pb2_grpc.RouterStub]]:
    channels = [
        grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CONNECTIONS)
    ]
    try:
        yield [router_pb2_grpc.RouterStub(channel) for channel in channels]
    finally:
        for channel in channels:
            channel.close()


def _route(stub: router_pb2_grpc.RouterStub, namespace: str, request_id: str) -> pb.RouteResponse:
    request = pb.RouteRequest(
        model=MODEL, namespace=namespace, estimated_tokens=10, request_id=request_id
    )
    answer: pb.RouteResponse = stub.Route(request, timeout=10)
    return answer


def _selected_here(stub: router_pb2_grpc.RouterStub, namespace: str, backend: str) -> int:
    """The selected_total this connection's worker counted itself (GetInventory is answered
    from the worker's own counters): tells which worker a connection landed on."""
    inventory = stub.GetInventory(pb.InventoryRequest(namespace=namespace), timeout=10)
    return int(next(b.selected_total for b in inventory.backends if b.ref.name == backend))


def _create_capped_backend(objects: Objects, name: str, cap: int) -> None:
    objects.create(
        "backends",
        name,
        backend_spec("http://127.0.0.1:9", healthCheck={"enabled": False}, maxConcurrency=cap),
    )


def test_max_concurrency_holds_across_workers_and_any_worker_releases_a_slot(
    cluster: Cluster, namespace: str
) -> None:
    with cluster.api_client() as api:
        objects = Objects(api, namespace)
        _create_capped_backend(objects, "capped", 3)
        with _operator(cluster, namespace) as address, _stubs(address) as stubs:
            wait_for(lambda: _route(stubs[0], namespace, "probe").outcome == pb.OUTCOME_ROUTED)
            stubs[0].ReportUsage(
                pb.UsageReport(
                    backend="capped",
                    namespace=namespace,
                    model=MODEL,
                    success=True,
                    request_id="probe",
                ),
                timeout=10,
            )
            # Which connections share stubs[0]'s worker, and which reach the other one.
            here = [s for s in stubs if _selected_here(s, namespace, "capped") == 1]
            there = [s for s in stubs if _selected_here(s, namespace, "capped") == 0]
            assert here, "no connection on the first worker"
            assert there, "all connections landed on one worker"

            # Concurrent load from every connection: never more than 3 routed without a report.
            with ThreadPoolExecutor(32) as pool:
                answers = list(
                    pool.map(
                        lambda i: (i, _route(stubs[i % CONNECTIONS], namespace, f"r{i}")),
                        range(400),
                    )
                )
            routed = [(i, a) for i, a in answers if a.outcome == pb.OUTCOME_ROUTED]
            assert len(routed) == 3

            # Report each routed request on a connection of the *other* worker.
            for i, _answer in routed:
                origin = stubs[i % CONNECTIONS]
                reporter = there[0] if origin in here else here[0]
                ack = reporter.ReportUsage(
                    pb.UsageReport(
                        backend="capped",
                        namespace=namespace,
                        model=MODEL,
                        success=True,
                        request_id=f"r{i}",
                    ),
                    timeout=10,
                )
                assert ack.accepted

            # All three slots come free: three new Routes are admitted, a fourth is not.
            def three_free() -> bool:
                inventory = stubs[0].GetInventory(pb.InventoryRequest(namespace=namespace))
                in_flight = [b.in_flight for b in inventory.backends if b.ref.name == "capped"]
                return in_flight == [0]

            wait_for(three_free)
            again = [_route(stubs[n], namespace, f"again{n}").outcome for n in range(4)]
            assert again.count(pb.OUTCOME_ROUTED) == 3


def test_spend_and_decisions_persisted_equal_what_the_workers_acknowledged(
    cluster: Cluster, namespace: str
) -> None:
    with cluster.api_client() as api:
        objects = Objects(api, namespace)
        objects.create(
            "backends", "paid", backend_spec("http://127.0.0.1:9", healthCheck={"enabled": False})
        )
        objects.create(
            "routingpolicies",
            "budgeted",
            {"modelPatterns": ["llama3:*"], "budget": {"monthlyLimitUsd": 1_000_000}},
        )
        acknowledged = 0.0
        routed = 0
        lock = threading.Lock()
        with _operator(cluster, namespace) as address, _stubs(address) as stubs:
            wait_for(lambda: _route(stubs[0], namespace, "warm").outcome == pb.OUTCOME_ROUTED)

            def report(i: int) -> None:
                nonlocal acknowledged, routed
                cost = 0.001 * (1 + i % 7)
                stub = stubs[i % CONNECTIONS]
                answer = _route(stub, namespace, f"q{i}")
                ack = stub.ReportUsage(
                    pb.UsageReport(
                        backend="paid",
                        namespace=namespace,
                        model=MODEL,
                        policy="budgeted",
                        success=True,
                        cost_usd=cost,
                        request_id=f"q{i}",
                    ),
                    timeout=10,
                )
                with lock:
                    routed += answer.outcome == pb.OUTCOME_ROUTED
                    acknowledged += cost if ack.accepted else 0.0

            with ThreadPoolExecutor(16) as pool:
                list(pool.map(report, range(600)))
        # The operator has stopped: its final flush wrote everything the workers acknowledged.
        status = objects.status("routingpolicies", "budgeted")
    assert float(status["budget"]["spentUsd"]) == pytest.approx(acknowledged, abs=1e-6)
    assert status["decisions"]["routed"] == routed + 1  # and the warm-up call


def test_churn_of_500_backends_fails_no_route_call(cluster: Cluster, namespace: str) -> None:
    with cluster.api_client() as api:
        objects = Objects(api, namespace)
        objects.create(
            "backends", "stable", backend_spec("http://127.0.0.1:9", healthCheck={"enabled": False})
        )
        with _operator(cluster, namespace) as address, _stubs(address) as stubs:
            wait_for(lambda: _route(stubs[0], namespace, "warm").outcome == pb.OUTCOME_ROUTED)
            stop = threading.Event()
            failures: list[str] = []
            calls = [0]

            def load(stub: router_pb2_grpc.RouterStub) -> None:
                while not stop.is_set():
                    try:
                        answer = _route(stub, namespace, "")
                        if answer.outcome != pb.OUTCOME_ROUTED:
                            failures.append(f"not routed: {answer.reason}")
                    except grpc.RpcError as exc:
                        failures.append(f"{exc.code()}: {exc.details()}")
                    calls[0] += 1

            threads = [threading.Thread(target=load, args=(s,)) for s in stubs[:4]]
            for thread in threads:
                thread.start()
            try:
                _churn(objects, count=500, cycles=2)
            finally:
                stop.set()
                for thread in threads:
                    thread.join()
    assert calls[0] > 0
    assert failures == []


def _churn(objects: Objects, *, count: int, cycles: int) -> None:
    names = [f"churn-{i:03d}" for i in range(count)]
    spec = backend_spec("http://127.0.0.1:9", model="churn-model", healthCheck={"enabled": False})
    with ThreadPoolExecutor(8) as pool:
        for cycle in range(cycles):
            list(pool.map(lambda n: objects.create("backends", n, spec), names))
            changed = {**spec, "priority": 10 + cycle}
            list(pool.map(lambda n, c=changed: objects.patch_spec("backends", n, c), names))
            list(pool.map(lambda n: objects.delete("backends", n), names))
            # Deletion is asynchronous: wait until every name is free for the next cycle.
            wait_for(lambda: not _any_left(objects, names), timeout=120)


def _any_left(objects: Objects, names: list[str]) -> bool:
    items = objects.list("backends")
    return any(item["metadata"]["name"] in names for item in items)
