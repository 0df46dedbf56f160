"""Server TLS: plain TLS with a certificate, or mutual TLS when a client CA is given."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class TlsConfig:
    """PEM files of the server's certificate and key; client_ca turns on mutual TLS.

    With client_ca set, a client must present a certificate signed by that CA or the handshake
    fails: the service then cannot be reached without one.
    """

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    def server_credentials(self) -> grpc.ServerCredentials:
        client_ca = self.client_ca_file.read_bytes() if self.client_ca_file else None
        return grpc.ssl_server_credentials(
            [(self.key_file.read_bytes(), self.cert_file.read_bytes())],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )
