"""etcd + kube-apiserver on free loopback ports, owned by one object.

The server is real: RBAC authorization, a static admin token, client certificates
from our own CA, ServiceAccount tokens signed with our own key, and the default
admission chain (PodSecurity included) minus the ServiceAccount plugin, which
would reject Pods until a controller-manager creates each namespace's `default`
ServiceAccount. Flags follow control-plane-notes.md section 4.2.

Only the processes this object started are ever stopped, by their PIDs.
"""

from __future__ import annotations

import atexit
import secrets
import signal
import socket
import ssl
import time
from pathlib import Path

from nexus_testkit.localcluster.kubeconfig import write_kubeconfig
from nexus_testkit.localcluster.pki import Pki, create_pki
from nexus_testkit.localcluster.process import ManagedProcess
from nexus_testkit.localcluster.readiness import wait_until_ready

LOOPBACK = "127.0.0.1"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CIDR = "10.0.0.0/24"
ADMIN_USER = "nexus-admin"


class LocalControlPlane:
    """A single-node control plane in `workdir`, built from the binaries in `bin_dir`."""

    def __init__(self, bin_dir: Path, workdir: Path) -> None:
        self.bin_dir = bin_dir
        self.workdir = workdir
        self.admin_token = secrets.token_hex(16)
        self.pki = Pki(workdir / "pki")
        self.kubeconfig = workdir / "kubeconfig"
        self.timings: dict[str, float] = {}
        self._etcd = ManagedProcess("etcd", argv=[], log_path=workdir / "logs" / "etcd.log")
        # Left behind by a killed owner, kube-apiserver gets SIGKILL rather than SIGTERM: it keeps
        # no state (etcd does, and gets SIGTERM), and with etcd gone too its graceful drain
        # has been seen to last past two minutes.
        self._apiserver = ManagedProcess(
            "kube-apiserver",
            argv=[],
            log_path=workdir / "logs" / "kube-apiserver.log",
            death_signal=signal.SIGKILL,
        )
        self._apiserver_port = 0

    @property
    def server(self) -> str:
        """The API server URL clients use."""
        return f"https://{LOOPBACK}:{self._apiserver_port}"

    @property
    def logs(self) -> dict[str, Path]:
        """Component name -> log file (kept after stop, appended across restarts)."""
        return {proc.name: proc.log_path for proc in (self._etcd, self._apiserver)}

    @property
    def startup_seconds(self) -> float:
        """Wall time of the last start(), from PKI generation to a ready /readyz."""
        return self.timings.get("total", 0.0)

    def start(self, *, timeout: float = 120.0) -> None:
        """Create the PKI, start etcd then kube-apiserver, wait for both, write the kubeconfig."""
        begin = time.monotonic()
        atexit.register(self.stop)
        try:
            self._prepare_credentials()
            self.timings["pki"] = time.monotonic() - begin
            etcd_client, etcd_peer, self._apiserver_port = _free_ports(3)
            self._start_etcd(client_port=etcd_client, peer_port=etcd_peer, timeout=timeout)
            self.timings["etcd"] = time.monotonic() - begin - self.timings["pki"]
            self._apiserver.argv = self._apiserver_argv(etcd_url=f"http://{LOOPBACK}:{etcd_client}")
            self.start_apiserver(timeout=timeout)
        except BaseException:
            self.stop()
            raise
        write_kubeconfig(
            self.kubeconfig,
            server=self.server,
            ca_pem=self.pki.ca_cert.read_bytes(),
            token=self.admin_token,
        )
        self.timings["total"] = time.monotonic() - begin

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd; idempotent, and safe after a failed start."""
        self._apiserver.stop()
        self._etcd.stop()
        atexit.unregister(self.stop)

    def stop_apiserver(self) -> None:
        """Stop only kube-apiserver (etcd keeps the data), to simulate an API outage."""
        self._apiserver.stop()

    def start_apiserver(self, *, timeout: float = 120.0) -> None:
        """(Re)start kube-apiserver on the same port with the same PKI and wait for /readyz."""
        begin = time.monotonic()
        self._apiserver.start()
        wait_until_ready(
            f"{self.server}/readyz",
            process=self._apiserver,
            timeout=timeout,
            ssl_context=ssl.create_default_context(cafile=str(self.pki.ca_cert)),
        )
        self.timings["kube-apiserver"] = time.monotonic() - begin

    def apiserver_running(self) -> bool:
        return self._apiserver.running()

    def _prepare_credentials(self) -> None:
        create_pki(self.pki.directory)
        tokens = self.pki.directory / "tokens.csv"
        tokens.write_text(f'{self.admin_token},{ADMIN_USER},{ADMIN_USER}-uid,"system:masters"\n')
        tokens.chmod(0o600)

    def _start_etcd(self, *, client_port: int, peer_port: int, timeout: float) -> None:
        client_url = f"http://{LOOPBACK}:{client_port}"
        peer_url = f"http://{LOOPBACK}:{peer_port}"
        self._etcd.argv = [
            str(self.bin_dir / "etcd"),
            "--name=nexus-local",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=nexus-local={peer_url}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]
        self._etcd.start()
        wait_until_ready(f"{client_url}/health", process=self._etcd, timeout=timeout)

    def _apiserver_argv(self, *, etcd_url: str) -> list[str]:
        pki = self.pki
        return [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            f"--bind-address={LOOPBACK}",
            f"--secure-port={self._apiserver_port}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--cert-dir={pki.directory / 'generated'}",
            f"--client-ca-file={pki.ca_cert}",
            f"--token-auth-file={pki.directory / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ]


def _free_ports(count: int) -> list[int]:
    """Distinct loopback ports free right now (all held open until every one is chosen)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
