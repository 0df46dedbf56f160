"""`nexus-operator serve` refuses unusable flags and busy ports with one line and exit 2."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .fleet import default_fleet, write_manifests
from .serving import serve_command

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("manifests")
    write_manifests(directory, default_fleet())
    return directory


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback TCP port held by a listening socket for the test's duration."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield int(sock.getsockname()[1])
    sock.close()


def serve(manifests: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """`serve` on free ports with no metrics, then `flags` (a flag given again wins)."""
    command = [
        *serve_command(manifests),
        "--assume-healthy",
        "--extproc-address",
        "127.0.0.1:0",
        "--grpc-address",
        "127.0.0.1:0",
        "--metrics-port",
        "-1",
        *flags,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def assert_refused(result: subprocess.CompletedProcess[str], *, naming: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "Event loop is closed" not in result.stderr, result.stderr
    assert naming in result.stderr, result.stderr


def assert_refused_in_one_line(result: subprocess.CompletedProcess[str], *, naming: str) -> None:
    assert_refused(result, naming=naming)
    ours = [line for line in result.stderr.splitlines() if line.startswith("nexus-operator serve:")]
    assert len(ours) == 1, result.stderr


def test_a_grpc_port_in_use_is_refused_naming_the_address(manifests: Path, taken_port: int) -> None:
    address = f"127.0.0.1:{taken_port}"
    result = serve(manifests, "--grpc-address", address)
    assert_refused_in_one_line(result, naming=address)


def test_an_extproc_port_in_use_is_refused_naming_the_address(
    manifests: Path, taken_port: int
) -> None:
    address = f"127.0.0.1:{taken_port}"
    result = serve(manifests, "--extproc-address", address)
    assert_refused_in_one_line(result, naming=address)


def test_a_malformed_gateway_namespace_is_refused_naming_the_flag(manifests: Path) -> None:
    result = serve(manifests, "--gateway-namespace", "Not_A_Namespace")
    assert_refused_in_one_line(result, naming="--gateway-namespace")


def test_an_unparseable_grpc_address_is_refused_naming_it(manifests: Path) -> None:
    result = serve(manifests, "--grpc-address", "no port here")
    assert_refused_in_one_line(result, naming="no port here")


def test_a_metrics_port_in_use_is_refused_naming_the_flag(manifests: Path, taken_port: int) -> None:
    result = serve(manifests, "--metrics-port", str(taken_port))
    assert_refused_in_one_line(result, naming=f"--metrics-port {taken_port}")


def test_a_missing_tls_certificate_is_refused_naming_the_flag(
    manifests: Path, tmp_path: Path
) -> None:
    key = tmp_path / "key.pem"
    key.write_text("not checked before the certificate")
    result = serve(manifests, "--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(key))
    assert_refused_in_one_line(result, naming="--tls-cert")


@pytest.mark.parametrize(
    ("flags", "naming"),
    [
        (("--max-concurrent-rpcs", "0"), "--max-concurrent-rpcs"),
        (("--log-level", "bogus"), "--log-level"),
    ],
)
def test_an_invalid_flag_value_is_a_usage_error(
    manifests: Path, flags: tuple[str, ...], naming: str
) -> None:
    assert_refused(serve(manifests, *flags), naming=naming)
