"""The operator's Secret reader against a stub of the JSON client (not of an API server): one GET
per named Secret per round, 403 is SecretUnreadable naming the chart value, an unreachable API
server keeps the last outcome, and a Backend that stops naming a Secret is forgotten."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import Any, cast

import pytest
from routing_factories import backend

from nexus_operator.api import conditions
from nexus_operator.cli import cmd_run, operator_main
from nexus_operator.operator.kube import KubeApi, KubeError, NotFoundError, UnavailableError
from nexus_operator.operator.secret_credentials import SecretCredentials
from nexus_operator.routing import Credential, CredentialProblem, Registry

SECRET_PATH = "/api/v1/namespaces/default/secrets/key"


class SecretsStub:
    def __init__(self) -> None:
        self.secrets: dict[str, dict[str, Any]] = {}
        self.failure: KubeError | None = None
        self.gets: list[str] = []

    async def get(self, path: str) -> dict[str, Any]:
        self.gets.append(path)
        if self.failure is not None:
            raise self.failure
        if path not in self.secrets:
            raise NotFoundError(404, "not found")
        return self.secrets[path]


def _secret(value: str) -> dict[str, Any]:
    return {"data": {"token": base64.b64encode(value.encode()).decode()}}


def _setup(
    *names: str,
) -> tuple[Registry, SecretsStub, SecretCredentials, list[tuple[tuple[str, str], Any]]]:
    registry = Registry()
    registry.replace_all([backend(n, type="openai", url="https://x.test") for n in names], [])
    kube = SecretsStub()
    changes: list[tuple[tuple[str, str], Any]] = []
    reader = SecretCredentials(
        cast(KubeApi, kube), registry, on_change=lambda k, o: changes.append((k, o))
    )
    return registry, kube, reader, changes


async def test_one_get_per_secret_serves_every_backend_naming_it() -> None:
    registry, kube, reader, changes = _setup("a", "b")
    kube.secrets[SECRET_PATH] = _secret("v")
    await reader.start()
    assert kube.gets == [SECRET_PATH]
    for name in ("a", "b"):
        credential = registry.credentials.header(("default", name))
        assert credential is not None
        assert credential.header_value == "Bearer v"
    assert changes == []  # a first success is no news
    condition = reader.condition(("default", "a"))
    assert condition is not None
    assert condition.reason == conditions.SECRET_READ


async def test_forbidden_is_secret_unreadable_naming_the_chart_value() -> None:
    registry, kube, reader, changes = _setup("a")
    kube.failure = KubeError(403, "forbidden")
    await reader.start()
    condition = reader.condition(("default", "a"))
    assert condition is not None
    assert condition.reason == conditions.SECRET_UNREADABLE
    assert "rbac.secrets.enabled" in condition.message
    assert registry.runtime.backend("default", "a").credentials_problem == condition.message
    assert [type(o) for _, o in changes] == [CredentialProblem]


async def test_unreachable_api_server_keeps_the_last_credential() -> None:
    registry, kube, reader, changes = _setup("a")
    kube.secrets[SECRET_PATH] = _secret("v")
    await reader.start()
    kube.failure = UnavailableError(0, "connection refused")
    await reader.refresh(all_keys=True)
    assert registry.credentials.header(("default", "a")) is not None
    kube.failure = None
    del kube.secrets[SECRET_PATH]
    await reader.refresh(all_keys=True)
    assert registry.credentials.header(("default", "a")) is None
    kube.secrets[SECRET_PATH] = _secret("w")
    await reader.refresh(all_keys=True)
    assert [type(o) for _, o in changes] == [CredentialProblem, Credential]


async def test_a_backend_that_stops_naming_a_secret_is_forgotten() -> None:
    registry, _, reader, _ = _setup("a")
    await reader.start()
    assert registry.runtime.backend("default", "a").credentials_problem is not None
    registry.replace_all([backend("a")], [])
    assert registry.credentials.keys() == frozenset()
    assert reader.condition(("default", "a")) is None
    assert registry.runtime.backend("default", "a").credentials_problem is None


async def test_a_changed_reference_is_read_again_on_the_next_round() -> None:
    registry, kube, reader, _ = _setup("a")
    kube.secrets[SECRET_PATH] = _secret("v")
    await reader.start()
    moved = backend(
        "a", type="openai", url="https://x.test", credentialsSecretRef={"name": "new", "key": "k"}
    )
    registry.upsert_backend(moved)
    await reader.refresh()
    assert kube.gets[-1] == "/api/v1/namespaces/default/secrets/new"
    condition = reader.condition(("default", "a"))
    assert condition is not None
    assert condition.reason == conditions.SECRET_NOT_FOUND


async def test_every_secret_is_read_again_each_interval_even_while_backends_keep_changing() -> None:
    registry, kube, _, _ = _setup("a")
    reader = SecretCredentials(cast(KubeApi, kube), registry, refresh_interval_s=0.2)
    kube.secrets[SECRET_PATH] = _secret("v")
    await reader.start()
    task = asyncio.create_task(reader.run())
    try:
        del kube.secrets[SECRET_PATH]
        for step in range(200):  # a reference edit every 10 ms wakes the loop each time
            ref = {"name": "other", "key": f"k{step % 2}"}
            churn = backend("churn", type="openai", url="https://x.test", credentialsSecretRef=ref)
            registry.upsert_backend(churn)
            if registry.credentials.header(("default", "a")) is None:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert registry.runtime.backend("default", "a").credentials_problem is not None


def test_run_takes_the_refresh_interval_and_refuses_one_that_is_not_positive(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = operator_main.build_parser("run")
    args = parser.parse_args(["run", "--credentials-refresh", "5"])
    assert cmd_run.controller_config(args).credentials_refresh_s == 5.0
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["run", "--credentials-refresh", "0"])
    assert exited.value.code == 2
    assert "--credentials-refresh" in capsys.readouterr().err
