"""The budget ledger under faults, against a real kube-apiserver: is spend exact?

A fresh local control plane; real `nexus-operator run` processes (each with --replica-id and its
own --spool-dir, as the chart runs them) reach it through a fault-injecting TCP proxy; usage
goes over gRPC and only acknowledged reports are tallied. Figures:
- double_counted_usd: persisted − acknowledged after answers delayed past the client timeout
  (--api-timeout 0.5, answers held 1 s), dropped answers and torn writes, 50 reports/s;
- lost_on_sigkill_usd: acknowledged − persisted after SIGKILL at 100 reports/s and a restart;
- lost_on_sigkill_during_outage_usd: the same with the kill 10 s into an API-server outage;
- cross_replica_lag_p50_s / _max_s: a report acknowledged by replica A → replica B's
  GetInventory shows it, for a policy near its limit (20 samples);
- hard_limit_overrun_usd: two replicas, blockAll, clients that Route then report $0.05 each
  at ~40/s per replica until both reject: persisted spend − the limit.
Prints the figures and merges them into benchmarks/results/operator.json.
"""

from __future__ import annotations

import functools
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubernetes import client

from benchkit import merge_results
from nexus_operator.api import GROUP, VERSION
from nexus_operator.serving.proto import router_pb2
from nexus_testkit.faultproxy import FaultProxy
from nexus_testkit.localcluster import Cluster, LocalControlPlane, find_bin_dir
from nexus_testkit.operator_process import OperatorProcess, UsageDriver

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "operator.json"
POLICY = "budgeted"
FLAGS = ("--flush-interval", "2", "--api-timeout", "0.5")


class Bench:
    def __init__(self, cluster: Cluster, proxy: FaultProxy, workdir: Path) -> None:
        self.cluster = cluster
        self.proxy = proxy
        self.workdir = workdir
        self.kubeconfig = proxy.kubeconfig(cluster.kubeconfig, workdir / "via-proxy.kubeconfig")
        self.api = cluster.api_client()
        self.objects = client.CustomObjectsApi(self.api)
        self.replicas: list[OperatorProcess] = []

    def namespace(self, name: str, budget: dict[str, Any]) -> str:
        client.CoreV1Api(self.api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
        )
        backend = {
            "type": "ollama",
            "url": "http://127.0.0.1:9",
            "models": [{"id": "llama3:8b"}],
            "healthCheck": {"enabled": False},
        }
        self._create(name, "backends", "Backend", "local", backend)
        policy = {"modelPatterns": ["*"], "budget": budget}
        self._create(name, "routingpolicies", "RoutingPolicy", POLICY, policy)
        return name

    def _create(self, ns: str, plural: str, kind: str, name: str, spec: dict[str, Any]) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}}
        body["spec"] = spec
        self.objects.create_namespaced_custom_object(GROUP, VERSION, ns, plural, body)

    def replica(self, namespace: str, index: int) -> OperatorProcess:
        replica = OperatorProcess(
            self.kubeconfig,
            namespace,
            replica_id=f"{namespace}-{index}",
            spool_dir=self.workdir / f"spool-{namespace}-{index}",
            extra=FLAGS,
        ).start()
        self.replicas.append(replica)
        return replica

    def spent(self, namespace: str) -> float:
        status = self.objects.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "routingpolicies", POLICY
        ).get("status")
        return float(((status or {}).get("budget") or {}).get("spentUsd") or 0.0)

    def settled(self, namespace: str, *, target: float, timeout: float = 60.0) -> float:
        """The persisted spend once it reaches `target` or stops moving for 5 s."""
        deadline = time.monotonic() + timeout
        last, since = -1.0, time.monotonic()
        while time.monotonic() < deadline:
            value = self.spent(namespace)
            if abs(value - target) < 1e-6:
                return value
            if value != last:
                last, since = value, time.monotonic()
            elif time.monotonic() - since > 5:
                return value
            time.sleep(0.2)
        return self.spent(namespace)

    def close(self) -> None:
        for replica in self.replicas:
            replica.terminate()
        self.api.close()


def double_counted(bench: Bench) -> float:
    ns = bench.namespace("double", {"monthlyLimitUsd": 1e6})
    replica = bench.replica(ns, 0)
    driver = UsageDriver(replica, policy=POLICY, cost=0.01, rate=50).start()
    for faults, seconds in (
        ({"delay_answers_s": 1.0}, 6.0),
        ({"drop_answers": 0.3}, 4.0),
        ({"reset_requests": 0.3}, 4.0),
    ):
        bench.proxy.set(**faults)
        time.sleep(seconds)
    bench.proxy.clear()
    time.sleep(1.0)
    driver.stop()
    acknowledged = driver.acknowledged_usd
    persisted = bench.settled(ns, target=acknowledged)
    print(f"faults: acknowledged ${acknowledged:.2f}, persisted ${persisted:.2f}", flush=True)
    return round(max(0.0, persisted - acknowledged), 6)


def lost_on_sigkill(bench: Bench, *, outage: bool) -> float:
    ns = bench.namespace("outage" if outage else "sigkill", {"monthlyLimitUsd": 1e6})
    replica = bench.replica(ns, 0)
    driver = UsageDriver(replica, policy=POLICY, cost=0.01, rate=100).start()
    time.sleep(3.0)
    if outage:
        bench.proxy.set(outage=True)
        time.sleep(10.0)
    replica.kill()
    driver.stop()
    acknowledged = driver.acknowledged_usd
    replica.start(wait=False)
    bench.proxy.clear()
    replica.wait_serving()
    persisted = bench.settled(ns, target=acknowledged)
    label = "SIGKILL during outage" if outage else "SIGKILL"
    print(f"{label}: acknowledged ${acknowledged:.2f}, persisted ${persisted:.2f}", flush=True)
    return round(max(0.0, acknowledged - persisted), 6)


def inventory_spent(replica: OperatorProcess, namespace: str) -> float:
    assert replica.stub is not None
    inventory = replica.stub.GetInventory(
        router_pb2.InventoryRequest(namespace=namespace), timeout=5
    )
    return float(next(p.spent_usd for p in inventory.policies if p.name == POLICY))


def cross_replica_lag(bench: Bench) -> list[float]:
    ns = bench.namespace("lag", {"monthlyLimitUsd": 100, "softLimitPercent": 75})
    a, b = bench.replica(ns, 0), bench.replica(ns, 1)
    a.report(policy=POLICY, cost=70.0)  # past 90 % of the soft limit: near-limit flushes
    wait_until(functools.partial(reached, b, ns, 70.0 - 1e-6))
    samples = []
    for i in range(1, 21):
        time.sleep(0.3)
        started = time.monotonic()
        assert a.report(policy=POLICY, cost=0.25)
        wait_until(functools.partial(reached, b, ns, 70.0 + 0.25 * i - 1e-6), interval=0.005)
        samples.append(time.monotonic() - started)
    return samples


def reached(replica: OperatorProcess, namespace: str, spent: float) -> bool:
    return inventory_spent(replica, namespace) >= spent


def hard_limit_overrun(bench: Bench) -> float:
    limit = 5.0
    ns = bench.namespace("overrun", {"monthlyLimitUsd": limit, "hardLimitAction": "blockAll"})
    fleet = [bench.replica(ns, 0), bench.replica(ns, 1)]
    for replica in fleet:
        replica.report(policy=POLICY, cost=4.0 / len(fleet))  # start just below the limit

    def client_loop(replica: OperatorProcess) -> None:
        rejected_in_a_row = 0
        while rejected_in_a_row < 20:
            if replica.route() == router_pb2.OUTCOME_ROUTED:
                rejected_in_a_row = 0
                replica.report(policy=POLICY, cost=0.05)
            else:
                rejected_in_a_row += 1
            time.sleep(0.025)

    threads = [threading.Thread(target=client_loop, args=(r,)) for r in fleet]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    persisted = bench.settled(ns, target=float("nan"))
    print(f"hard limit ${limit:.2f}: persisted ${persisted:.2f}", flush=True)
    return round(max(0.0, persisted - limit), 6)


def wait_until(
    predicate: Callable[[], bool], *, timeout: float = 30.0, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(interval)


def measure(plane: LocalControlPlane, workdir: Path) -> dict[str, float]:
    cluster = Cluster.local(plane)
    cluster.kubectl("apply", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    server = urlsplit(plane.server)
    proxy = FaultProxy(server.hostname or "127.0.0.1", server.port or 443).start()
    bench = Bench(cluster, proxy, workdir)
    try:
        figures = {"double_counted_usd": double_counted(bench)}
        figures["lost_on_sigkill_usd"] = lost_on_sigkill(bench, outage=False)
        figures["lost_on_sigkill_during_outage_usd"] = lost_on_sigkill(bench, outage=True)
        lag = cross_replica_lag(bench)
        figures["cross_replica_lag_p50_s"] = round(statistics.median(lag), 4)
        figures["cross_replica_lag_max_s"] = round(max(lag), 4)
        figures["hard_limit_overrun_usd"] = hard_limit_overrun(bench)
    finally:
        bench.close()
        proxy.stop()
    return figures


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-budgets-") as workdir:
        plane = LocalControlPlane(find_bin_dir(), Path(workdir))
        plane.start()
        try:
            figures = measure(plane, Path(workdir))
        finally:
            plane.stop()
    merge_results(RESULTS, figures)
    for key, value in figures.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
