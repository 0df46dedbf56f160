"""Run the real operator (kopf + controller) in-process against the test control plane.

Each OperatorThread runs `kopf.operator` with its own explicit registry on its own event loop in
a thread, exactly as `nexus-operator run` does minus gRPC; tests reach the controller through
`call`, which runs a function on the operator's loop so runtime cells are never touched from two
threads. Several instances may run at once (replicas, restarts).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import kopf
from kubernetes import client

from nexus_operator.api import GROUP, VERSION
from nexus_operator.operator.handlers import Hooks, build_registry
from nexus_operator.operator.replica import Controller, ControllerConfig
from nexus_operator.routing import Decision, RequestRequirements

T = TypeVar("T")
START_TIMEOUT_S = 60.0


class OperatorThread:
    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self.controller: Controller | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="operator", daemon=True)

    def start(self) -> OperatorThread:
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_S) or self.controller is None:
            raise RuntimeError(f"operator did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(START_TIMEOUT_S)

    def call(self, fn: Callable[[Controller], T]) -> T:
        """Run fn(controller) on the operator's loop and return its result."""
        assert self._loop is not None
        assert self.controller is not None
        controller = self.controller

        async def run() -> T:
            return fn(controller)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    def _main(self) -> None:
        async def started(controller: Controller, _memo: kopf.Memo) -> None:
            self.controller = controller
            self._loop = asyncio.get_running_loop()
            self._started.set()

        namespaces = self.config.namespaces
        try:
            asyncio.run(
                kopf.operator(
                    registry=build_registry(self.config, Hooks(started=started)),
                    standalone=True,
                    clusterwide=not namespaces,
                    namespaces=namespaces,
                    stop_flag=self._stop,
                    memo=kopf.Memo(),
                )
            )
        except BaseException as exc:
            self._error = exc
            self._started.set()


@contextmanager
def running_operator(config: ControllerConfig) -> Iterator[OperatorThread]:
    operator = OperatorThread(config).start()
    try:
        yield operator
    finally:
        operator.stop()


def operator_config(kubeconfig: Path, namespace: str, **overrides: Any) -> ControllerConfig:
    """One test's operator: watches only its namespace and keeps its Lease there."""
    values: dict[str, Any] = {
        "namespaces": (namespace,),
        "kubeconfig": str(kubeconfig),
        "lease_namespace": namespace,
        "flush_interval_s": 0.5,
        "lease_duration_s": 4.0,
    }
    values.update(overrides)
    return ControllerConfig(**values)


def wait_for(predicate: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.1) -> T:
    """Poll until predicate() is truthy (convergence, not speed: the deadline is generous)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value: T | None = predicate()
        except (AssertionError, KeyError, client.ApiException):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate!r}")
        time.sleep(interval)


class Objects:
    """Create, change, read and delete our custom objects in one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self._api = client.CustomObjectsApi(api)
        self.namespace = namespace

    def create(self, plural: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        kind = {"backends": "Backend", "routingpolicies": "RoutingPolicy"}[plural]
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {"name": name},
            "spec": spec,
        }
        return dict(
            self._api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, body)
        )

    def patch_spec(self, plural: str, name: str, spec: dict[str, Any]) -> None:
        self._api.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, name, {"spec": spec}
        )

    def get(self, plural: str, name: str) -> dict[str, Any]:
        return dict(
            self._api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name)
        )

    def status(self, plural: str, name: str) -> dict[str, Any]:
        return dict(self.get(plural, name).get("status") or {})

    def list(self, plural: str) -> list[dict[str, Any]]:
        listing = self._api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, plural)
        return list(listing.get("items") or [])

    def delete(self, plural: str, name: str) -> None:
        self._api.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name)


def condition(status: dict[str, Any], condition_type: str) -> dict[str, Any]:
    """The condition of that type, or {} while there is none."""
    return next((c for c in status.get("conditions") or [] if c["type"] == condition_type), {})


def backend_spec(url: str, model: str = "llama3:8b", **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "ollama",
        "url": url,
        "models": [{"id": model}],
        "healthCheck": {"intervalSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 2},
    }
    spec.update(extra)
    return spec


def route(operator: OperatorThread, namespace: str, model: str = "llama3:8b") -> Decision:
    req = RequestRequirements(model=model, namespace=namespace, estimated_tokens=100)
    return operator.call(lambda c: c.engine.route(req))


def routed_name(operator: OperatorThread, namespace: str) -> str | None:
    """The name of the backend a request for llama3:8b routes to now (None when rejected)."""
    backend = route(operator, namespace).backend
    return backend.name if backend else None


def explain(operator: OperatorThread, namespace: str, model: str = "llama3:8b") -> Decision:
    req = RequestRequirements(model=model, namespace=namespace, estimated_tokens=100)
    return operator.call(lambda c: c.engine.explain(req))


def reason_codes(decision: Decision) -> set[str]:
    return {x.reason_code for x in decision.rejections}
