"""`nexus-operator run` as a real process, for tests and benchmarks that SIGKILL or restart it.

Reports usage over real gRPC and keeps the tally of what the operator acknowledged (an Ack came
back), which is what the budget ledger must persist. The process is tied to the one that starts
it (nexus_testkit.lifeline): a test run killed with SIGKILL leaves no operator behind.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc

from nexus_operator.serving.proto import router_pb2, router_pb2_grpc

from .health import until_serving
from .lifeline import tied_to_this_process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ExitedEarlyError(RuntimeError):
    pass


class OperatorProcess:
    """One replica: `run` with a fixed --replica-id and --spool-dir, restartable."""

    def __init__(
        self,
        kubeconfig: Path,
        namespace: str,
        *,
        replica_id: str,
        spool_dir: Path | None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.replica_id = replica_id
        self.spool_dir = spool_dir
        self.extra = extra
        self.grpc_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._channel: grpc.Channel | None = None
        self.stub: router_pb2_grpc.RouterStub | None = None

    def start(self, *, wait: bool = True, timeout: float = 60.0) -> OperatorProcess:
        """Launch; with `wait`, return once gRPC health is SERVING (registry synced). A process
        that exits while starting (its port taken meanwhile by another process) is relaunched
        on a fresh port."""
        for attempt in range(3):
            self._launch()
            if not wait:
                return self
            try:
                self.wait_serving(timeout)
                return self
            except ExitedEarlyError:
                self._close(signal.SIGKILL)
                if attempt == 2:
                    raise
                self.grpc_port = free_port()
            except BaseException:
                self.kill()  # never leave a process behind that the caller does not hold
                raise
        return self

    def _launch(self) -> None:
        argv = [sys.executable, "-m", "nexus_operator.cli.operator_main", "run"]
        argv += ["--kubeconfig", str(self.kubeconfig)]
        argv += ["--grpc-address", f"127.0.0.1:{self.grpc_port}", "--metrics-port", "-1"]
        argv += ["--health-port", str(free_port()), "--namespace", self.namespace]
        argv += ["--extproc-address", "off"]
        argv += ["--lease-namespace", self.namespace, "--log-level", "WARNING"]
        argv += ["--replica-id", self.replica_id]
        if self.spool_dir is not None:
            argv += ["--spool-dir", str(self.spool_dir)]
        argv += list(self.extra)
        # Tied: a test run killed with SIGKILL leaves no operator (nor its workers) behind.
        self.process = subprocess.Popen(tied_to_this_process(argv))
        self._channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        self.stub = router_pb2_grpc.RouterStub(self._channel)

    def wait_serving(self, timeout: float = 60.0) -> None:
        assert self._channel is not None
        process = self.process
        assert process is not None

        def still_running() -> None:
            if process.poll() is not None:
                raise ExitedEarlyError(f"operator exited with {process.returncode}")

        if not until_serving(self._channel, limit_s=timeout, still_running=still_running):
            raise RuntimeError("operator did not start serving")

    def report(self, *, policy: str, cost: float, backend: str = "local") -> bool:
        """One ReportUsage; True when the operator acknowledged it."""
        stub = self.stub
        if stub is None:
            return False
        usage = router_pb2.UsageReport(
            backend=backend,
            namespace=self.namespace,
            model="llama3:8b",
            policy=policy,
            input_tokens=1,
            output_tokens=1,
            cost_usd=cost,
            success=True,
        )
        try:
            return bool(stub.ReportUsage(usage, timeout=2).accepted)
        except (grpc.RpcError, ValueError):  # ValueError: the channel was closed by a kill
            return False

    def route(self, model: str = "llama3:8b") -> int:
        assert self.stub is not None
        request = router_pb2.RouteRequest(
            model=model, namespace=self.namespace, estimated_tokens=10
        )
        return int(self.stub.Route(request, timeout=5).outcome)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook, no final flush."""
        self._close(signal.SIGKILL)

    def terminate(self, timeout: float = 60.0) -> None:
        self._close(signal.SIGTERM, timeout)

    def _close(self, sig: signal.Signals, timeout: float = 30.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout)
        if self._channel is not None:
            self._channel.close()
        self.process, self._channel, self.stub = None, None, None


class UsageDriver:
    """Reports `cost` to a replica at about `rate` per second in a thread, tallying the acks."""

    def __init__(self, replica: OperatorProcess, *, policy: str, cost: float, rate: float) -> None:
        self.replica = replica
        self.policy = policy
        self.cost = cost
        self.rate = rate
        self.acknowledged = 0
        self.ack_times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="usage", daemon=True)

    @property
    def acknowledged_usd(self) -> float:
        return self.acknowledged * self.cost

    def start(self) -> UsageDriver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(30)

    def _run(self) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            if self.replica.report(policy=self.policy, cost=self.cost):
                self.acknowledged += 1
                self.ack_times.append(time.monotonic())
            next_at += interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))
