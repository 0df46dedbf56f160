"""A small async face over the official Kubernetes client, for the few calls the operator makes.

Why not the typed API classes: kubernetes>=35 validates models strictly, and the operator only
needs JSON in and JSON out for custom-object status, Leases and Events. Why threads: the client is
synchronous; running it on a dedicated, bounded executor keeps kopf's event loop (and the gRPC
server sharing it) free while the API server is slow or gone.

Secrets are read only by secret_credentials.py, one named Secret at a time with `get` (never
list or watch); nothing here logs a response body.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import kopf
from kubernetes import client, config

from nexus_operator.api import GROUP, VERSION

JsonObject = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
JSON = "application/json"


class KubeError(Exception):
    """An API call failed.

    KubeError
    ├── ConflictError       HTTP 409: a resourceVersion precondition failed; re-read and retry
    ├── NotFoundError       HTTP 404: the object is gone
    └── UnavailableError    no HTTP answer at all: the API server is unreachable
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


class ConflictError(KubeError):
    pass


class NotFoundError(KubeError):
    pass


class UnavailableError(KubeError):
    pass


@dataclass(frozen=True)
class Kind:
    """A resource of our API group, by plural."""

    plural: str

    def path(self, namespace: str, name: str | None = None) -> str:
        base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{self.plural}"
        return base if name is None else f"{base}/{name}"

    def cluster_path(self) -> str:
        return f"/apis/{GROUP}/{VERSION}/{self.plural}"


BACKENDS = Kind("backends")
POLICIES = Kind("routingpolicies")


def load_configuration(kubeconfig: str | None) -> client.Configuration:
    """In-cluster service account when running in a pod without --kubeconfig, else the kubeconfig."""
    configuration = client.Configuration()
    if kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ:
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return configuration


def connection_info(configuration: client.Configuration) -> kopf.ConnectionInfo:
    """The same credentials for kopf's own watch streams, so both clients see one identity."""
    if configuration.refresh_api_key_hook is not None:
        configuration.refresh_api_key_hook(configuration)
    bearer = (configuration.api_key or {}).get("authorization") or (
        configuration.api_key or {}
    ).get("BearerToken")
    token = bearer.removeprefix("Bearer ").strip() if bearer else None
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


class KubeApi:
    """JSON requests to the API server on a bounded thread pool, with a per-call timeout."""

    def __init__(
        self, configuration: client.Configuration, *, timeout: float = 10.0, workers: int = 8
    ) -> None:
        configuration.retries = 0
        self._client = client.ApiClient(configuration)
        self.timeout = timeout
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kubeapi")
        self.reachable = True

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: JsonObject | None = None,
        content_type: str = JSON,
        query: list[tuple[str, str]] | None = None,
    ) -> JsonObject:
        loop = asyncio.get_running_loop()
        call = functools.partial(
            self._call, method, path, body=body, content_type=content_type, query=query or []
        )
        return await loop.run_in_executor(self._executor, call)

    async def get(self, path: str) -> JsonObject:
        return await self.request("GET", path)

    async def merge_patch(self, path: str, body: JsonObject) -> JsonObject:
        return await self.request("PATCH", path, body=body, content_type=MERGE_PATCH)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: JsonObject | None,
        content_type: str,
        query: list[tuple[str, str]],
    ) -> JsonObject:
        headers = {"Accept": JSON, "Content-Type": content_type}
        method, url, headers, serialized, _ = self._client.param_serialize(
            method=method,
            resource_path=path,
            query_params=query,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._client.call_api(
                method, url, header_params=headers, body=serialized, _request_timeout=self.timeout
            )
            response.read()
        except client.ApiException as exc:
            raise _error(exc.status or 0, str(exc.body or exc.reason)) from exc
        except Exception as exc:  # urllib3 connection/timeout errors: the server did not answer
            self.reachable = False
            raise UnavailableError(0, f"{type(exc).__name__}: {exc}") from exc
        self.reachable = True
        if response.status >= 400:
            raise _error(response.status, _message(response.data, str(response.reason)))
        payload: JsonObject = json.loads(response.data) if response.data else {}
        return payload


def _message(data: bytes | None, reason: str) -> str:
    """The Status message of an error answer; its raw text when the body is not JSON.

    A starting API server may answer 429/503 with plain text: that must surface as a KubeError
    (retried at once), not as a JSON parse error that fails kopf's startup handler.
    """
    try:
        payload = json.loads(data) if data else {}
    except ValueError:
        return (data or b"").decode(errors="replace").strip()[:1024] or reason
    return str(payload.get("message", reason)) if isinstance(payload, dict) else reason


def _error(status: int, message: str) -> KubeError:
    if status == 409:
        return ConflictError(status, message)
    if status == 404:
        return NotFoundError(status, message)
    if status == 0:
        return UnavailableError(status, message)
    return KubeError(status, message)
