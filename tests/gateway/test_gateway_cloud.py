"""A cloud (https) Backend through the gateway: a local TLS stand-in plays the provider and
answers 401 unless the request carries the key from the Backend's Secret. Envoy reaches it
through the per-Backend TLS cluster `envoy-config` renders (SNI, CA from the testkit PKI);
the picker injects the credential upstream only. A Backend whose Secret is missing is
excluded with its own reason. Run twice: `serve --from-dir` with the Secret in the folder,
and `nexus-operator run` against the real API server with a real Secret."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from nexus_crds import install_crds
from nexus_operator.cli.cmd_envoy_config import EnvoyOptions, cloud_upstreams
from nexus_operator.cli.manifest_dir import load_directory
from nexus_testkit.localcluster import Cluster, create_pki
from nexus_testkit.localcluster.standins import (
    NAME_HEADER,
    InferenceStandIn,
    StandIns,
    server_tls_context,
)

from .conftest import BODY_MODES, HELLO, Gateway, backend, policy, run_gateway, run_in_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

API_KEY = "sk-test-cloud-0123456789"
READY_S = 45.0


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cloud-pki")


@pytest.fixture(scope="module")
def provider(stand_ins: StandIns, pki_dir: Path) -> InferenceStandIn:
    """An https stand-in with a localhost certificate that wants `Authorization: Bearer KEY`."""
    pki = create_pki(pki_dir)
    server = stand_ins.start(
        "openai",
        ("cloud-model", "orphan-model"),
        name="cloud-provider",
        tls=server_tls_context(str(pki.serving_cert), str(pki.serving_key)),
    )
    server.host = "localhost"  # the certificate's name; Envoy sends it as SNI
    server.behaviour.required_headers = {"authorization": f"Bearer {API_KEY}"}
    return server


def cloud_documents(provider: InferenceStandIn, namespace: str | None) -> list[dict[str, Any]]:
    secret: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "provider-key"},
        "stringData": {"api-key": API_KEY},
    }
    if namespace is not None:
        secret["metadata"]["namespace"] = namespace
    probe = {"intervalSeconds": 2, "timeoutSeconds": 1}
    return [
        secret,
        backend(
            "cloud",
            provider,
            [{"id": "cloud-model", "supportsTools": True}],
            kind="openai",
            namespace=namespace,
            credentialsSecretRef={"name": "provider-key", "key": "api-key"},
            healthCheck=probe,
        ),
        backend(
            "cloud-without-secret",
            provider,
            [{"id": "orphan-model"}],
            kind="openai",
            namespace=namespace,
            credentialsSecretRef={"name": "no-such-secret", "key": "api-key"},
            healthCheck=probe,
        ),
        policy("everything", ["*"], namespace=namespace),
    ]


def envoy_options(documents: list[dict[str, Any]], workdir: Path, namespace: str) -> EnvoyOptions:
    """The cloud clusters exactly as `nexus-operator envoy-config` derives them."""
    folder = workdir / "render"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fleet.yaml").write_text(yaml.safe_dump_all(documents))
    backends = load_directory(folder, namespaces=[namespace]).backends
    upstreams = tuple(cloud_upstreams(backends, namespace=namespace))
    assert [u.name for u in upstreams] == ["cloud", "cloud-without-secret"]
    return EnvoyOptions(cloud=upstreams)


def first_success(gateway: Gateway, model: str) -> Any:
    """Poll until the picker has read the Secret and probed the provider Healthy."""
    deadline = time.monotonic() + READY_S
    while True:
        try:
            return gateway.client().chat.completions.with_raw_response.create(
                model=model, messages=HELLO
            )
        except openai.APIStatusError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def assert_cloud_behaviour(gateway: Gateway, provider: InferenceStandIn) -> None:
    raw = first_success(gateway, "cloud-model")
    assert raw.headers[NAME_HEADER] == "cloud-provider"
    assert provider.received[-1].headers["authorization"] == f"Bearer {API_KEY}"
    assert provider.received[-1].model == "cloud-model"
    assert API_KEY not in raw.text
    assert all(API_KEY not in value for value in raw.headers.values())
    assert raw.parse().choices[0].message.content

    before = len(provider.received)
    with pytest.raises(openai.APIStatusError) as refused:
        gateway.client().chat.completions.create(model="orphan-model", messages=HELLO)
    assert refused.value.status_code == 503
    assert len(provider.received) == before
    text = refused.value.response.text
    assert API_KEY not in text
    exclusions = refused.value.response.json()["error"]["nexus"]["exclusions"]
    mine = [e for e in exclusions if e["backend"].endswith("cloud-without-secret")]
    assert mine, exclusions
    assert mine[0]["reasonCode"] == "credentials_unavailable"
    assert "no-such-secret" in mine[0]["reason"]


@pytest.mark.parametrize("body_mode", BODY_MODES)
def test_cloud_backend_from_a_folder_gets_its_secret_and_a_missing_secret_excludes(
    provider: InferenceStandIn, pki_dir: Path, tmp_path: Path, body_mode: str
) -> None:
    documents = cloud_documents(provider, None)
    options = envoy_options(documents, tmp_path, "default")
    options = EnvoyOptions(cloud=options.cloud, upstream_ca=str(pki_dir / "ca.crt"))
    with run_gateway(
        tmp_path,
        documents,
        body_mode=body_mode,
        options=options,
        picker_env={"SSL_CERT_FILE": str(pki_dir / "ca.crt")},
        assume_healthy=False,
    ) as gateway:
        assert_cloud_behaviour(gateway, provider)


def test_cloud_backend_in_a_cluster_gets_its_secret_and_a_missing_secret_excludes(
    cluster: Cluster, namespace: str, provider: InferenceStandIn, pki_dir: Path, tmp_path: Path
) -> None:
    install_crds(cluster)
    documents = cloud_documents(provider, namespace)
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(documents))
    options = envoy_options(documents, tmp_path, namespace)
    options = EnvoyOptions(cloud=options.cloud, upstream_ca=str(pki_dir / "ca.crt"))
    command = run_in_cluster(cluster, namespace)
    with run_gateway(
        tmp_path,
        [],
        options=options,
        picker_command=command,
        picker_env={"SSL_CERT_FILE": str(pki_dir / "ca.crt")},
    ) as gateway:
        assert_cloud_behaviour(gateway, provider)
