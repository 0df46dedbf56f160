"""TLS and mutual TLS on the routing endpoint: who gets refused, who gets through."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from nexus_operator.serving import TlsConfig
from nexus_operator.serving.proto import router_pb2 as pb
from nexus_operator.serving.proto import router_pb2_grpc
from nexus_testkit.localcluster import Pki, create_pki, issue_client_cert

from .fleet import default_fleet, live_server, registry_of

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return create_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return create_pki(tmp_path_factory.mktemp("other-pki"))


async def _route(address: str, credentials: grpc.ChannelCredentials) -> pb.RouteResponse:
    async with grpc.aio.secure_channel(address, credentials) as channel:
        response: pb.RouteResponse = await router_pb2_grpc.RouterStub(channel).Route(
            pb.RouteRequest(model="mixtral"), timeout=5
        )
        return response


def _client_credentials(pki: Pki, *, cert: Path, key: Path) -> grpc.ChannelCredentials:
    """Trusts `pki`'s CA and presents the client certificate `cert`."""
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca_cert.read_bytes(),
        private_key=key.read_bytes(),
        certificate_chain=cert.read_bytes(),
    )


async def test_tls_client_trusting_the_ca_is_served(pki: Pki) -> None:
    tls = TlsConfig(cert_file=pki.serving_cert, key_file=pki.serving_key)
    async with live_server(registry_of(default_fleet()), tls=tls) as (_, address):
        response = await _route(
            address, grpc.ssl_channel_credentials(root_certificates=pki.ca_cert.read_bytes())
        )
    assert response.outcome == pb.OUTCOME_ROUTED


async def test_tls_client_without_the_ca_is_refused(pki: Pki, other_pki: Pki) -> None:
    tls = TlsConfig(cert_file=pki.serving_cert, key_file=pki.serving_key)
    async with live_server(registry_of(default_fleet()), tls=tls) as (_, address):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _route(
                address,
                grpc.ssl_channel_credentials(root_certificates=other_pki.ca_cert.read_bytes()),
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_plaintext_client_is_refused_by_a_tls_server(pki: Pki) -> None:
    tls = TlsConfig(cert_file=pki.serving_cert, key_file=pki.serving_key)
    async with (
        live_server(registry_of(default_fleet()), tls=tls) as (_, address),
        grpc.aio.insecure_channel(address) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await router_pb2_grpc.RouterStub(channel).Route(
                pb.RouteRequest(model="mixtral"), timeout=5
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mtls_client_without_a_certificate_is_refused(pki: Pki) -> None:
    tls = TlsConfig(
        cert_file=pki.serving_cert, key_file=pki.serving_key, client_ca_file=pki.ca_cert
    )
    async with live_server(registry_of(default_fleet()), tls=tls) as (_, address):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _route(
                address, grpc.ssl_channel_credentials(root_certificates=pki.ca_cert.read_bytes())
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mtls_client_with_a_certificate_from_another_ca_is_refused(
    pki: Pki, other_pki: Pki, tmp_path: Path
) -> None:
    cert, key = issue_client_cert(other_pki, user="intruder", directory=tmp_path)
    tls = TlsConfig(
        cert_file=pki.serving_cert, key_file=pki.serving_key, client_ca_file=pki.ca_cert
    )
    credentials = _client_credentials(pki, cert=cert, key=key)
    async with live_server(registry_of(default_fleet()), tls=tls) as (_, address):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _route(address, credentials)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mtls_client_with_a_certificate_from_the_ca_is_served(
    pki: Pki, tmp_path: Path
) -> None:
    cert, key = issue_client_cert(pki, user="gateway", directory=tmp_path)
    tls = TlsConfig(
        cert_file=pki.serving_cert, key_file=pki.serving_key, client_ca_file=pki.ca_cert
    )
    credentials = _client_credentials(pki, cert=cert, key=key)
    async with live_server(registry_of(default_fleet()), tls=tls) as (_, address):
        response = await _route(address, credentials)
    assert response.outcome == pb.OUTCOME_ROUTED
