"""`serve --from-dir` with Secrets in the directory: the probe sends the key (the stand-in
answers only to it), a Backend whose Secret is missing is excluded with its own reason, and a
sentinel key never shows in nexusctl output (route, explain, get), /metrics, gRPC error bodies
or the server's DEBUG log."""

from __future__ import annotations

import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from nexus_operator.cli import nexusctl
from nexus_testkit.localcluster.standins import StandIns

from .fleet import API_VERSION
from .serving import serve_command

pytestmark = pytest.mark.timeout(120)
SENTINEL = "sk-SENTINEL-5f4dcc3b5aa765d6"
_READY = re.compile(r"serving gRPC on port (\d+), metrics on port (\d+)")


def _backend(name: str, url: str, secret: str) -> dict[str, object]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Backend",
        "metadata": {"name": name},
        "spec": {
            "type": "openai",
            "url": url,
            "zone": "Restricted",
            "models": [{"id": "gpt-4o"}],
            "credentialsSecretRef": {"name": secret, "key": "api-key"},
            "healthCheck": {"intervalSeconds": 1, "timeoutSeconds": 1},
        },
    }


@pytest.fixture
def keyed_standin() -> Iterator[str]:
    standins = StandIns()
    server = standins.start("openai", models=("gpt-4o",), name="cloud")
    server.behaviour.required_headers = {"authorization": f"Bearer {SENTINEL}"}
    yield server.url
    standins.close()


def _eventually(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def test_directory_secret_is_sent_upstream_and_never_printed(
    tmp_path: Path, keyed_standin: str, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "cloud-key"},
        "stringData": {"api-key": SENTINEL},
    }
    documents = [
        _backend("cloud", keyed_standin, "cloud-key"),
        _backend("orphan", keyed_standin, "missing-key"),
        secret,
    ]
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump_all(documents))
    command = [*serve_command(tmp_path), "--grpc-address", "127.0.0.1:0", "--metrics-port", "0"]
    process = subprocess.Popen(
        [*command, "--log-level", "DEBUG"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    printed: list[str] = []
    try:
        assert process.stdout is not None
        ready = _READY.search(process.stdout.readline())
        assert ready is not None
        address, metrics_port = f"127.0.0.1:{ready.group(1)}", int(ready.group(2))
        route = ["--address", address, "-o", "json", "route", "gpt-4o"]
        # Routed only once a probe with the key succeeded: the stand-in refuses any other.
        assert _eventually(lambda: nexusctl.main(route) == 0)
        for argv in (
            route,
            ["--address", address, "explain", "gpt-4o"],
            ["--address", address, "-o", "yaml", "get"],
            ["--address", address, "route", "no-such-model"],
            ["--address", address, "usage", "--backend", "nope", "--model", "x"],
        ):
            nexusctl.main(argv)
        explained = capsys.readouterr()
        printed += [explained.out, explained.err]
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            printed.append(r.read().decode())
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=15)
    printed += [out, err]
    assert all(SENTINEL not in text for text in printed)
    everything = "\n".join(printed)
    assert "credentials_unavailable" in everything  # the orphan, in explain
    assert "Secret default/missing-key not found" in everything
    assert "DEBUG" in err  # the log was at its most verbose
