"""The local PKI produces certificates strict TLS clients accept."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nexus_testkit.localcluster import Pki, create_pki, issue_client_cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return create_pki(tmp_path_factory.mktemp("pki"))


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_serving_cert_passes_a_strict_tls_handshake_for_loopback(pki: Pki) -> None:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.serving_cert, pki.serving_key)
    client_ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    server_sock, client_sock = socket.socketpair()
    server = threading.Thread(target=_accept_handshake, args=(server_ctx, server_sock))
    server.start()

    with client_ctx.wrap_socket(client_sock, server_hostname="127.0.0.1") as tls:
        peer = tls.getpeercert()
    server.join(timeout=10)

    assert peer is not None
    assert ("IP Address", "127.0.0.1") in peer["subjectAltName"]


def _accept_handshake(ctx: ssl.SSLContext, sock: socket.socket) -> None:
    """wrap_socket on a connected socket completes the server side of the handshake."""
    ctx.wrap_socket(sock, server_side=True).close()


def test_client_cert_maps_user_to_cn_and_groups_to_organizations(pki: Pki, tmp_path: Path) -> None:
    cert_path, key_path = issue_client_cert(
        pki, user="alice", groups=["team-a", "team-b"], directory=tmp_path
    )

    cert = load(cert_path)
    cert.verify_directly_issued_by(load(pki.ca_cert))
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    groups = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert names == ["alice"]
    assert groups == ["team-a", "team-b"]
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert key_path.stat().st_mode & 0o077 == 0


def test_private_keys_are_readable_only_by_their_owner(pki: Pki) -> None:
    for key in (pki.ca_key, pki.serving_key, pki.sa_key):
        assert key.stat().st_mode & 0o077 == 0, key
